from alphaswarm_orch.cli.main import main

main(prog_name="alphaswarm-orch")
