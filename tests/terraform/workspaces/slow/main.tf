# An apply that blocks in a provisioner until the test creates "<gate>.release", after
# announcing itself with "<gate>.started": lets a test interrupt terraform mid-apply.
terraform {
  backend "local" {}
}

variable "gate" {
  type = string
}

resource "terraform_data" "first" {
  input = "first"
}

resource "terraform_data" "slow" {
  input      = "slow"
  depends_on = [terraform_data.first]

  provisioner "local-exec" {
    command = "touch '${var.gate}.started'; i=0; while [ ! -e '${var.gate}.release' ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done"
  }
}
