"""What the Redactor treats as secret, and how it masks terraform's JSON."""

from __future__ import annotations

from alphaswarm_orch.terraform.redact import REDACTED, Redactor, mask


def test_credentials_are_taken_from_the_environment_by_name_and_url_password() -> None:
    redactor = Redactor.from_env(
        {
            "AWS_SECRET_ACCESS_KEY": "aws-secret-value",
            "ARM_CLIENT_SECRET": "arm-secret-value",
            "TF_TOKEN_app_terraform_io": "registry-token",
            "ALPHASWARM_BROKER_URL": "redis://:broker-pass@redis:6379/0",
            "AWS_REGION": "eu-west-1",
            "HOME": "/root",
        }
    )
    line = (
        "aws-secret-value arm-secret-value registry-token broker-pass eu-west-1 /root "
        "redis://:broker-pass@redis"
    )
    assert redactor.text(line) == (
        f"{REDACTED} {REDACTED} {REDACTED} {REDACTED} eu-west-1 /root redis://:{REDACTED}@redis"
    )


def test_short_values_are_not_replaced_in_free_text() -> None:
    redactor = Redactor(["abc", "longer-secret", None, True])
    assert redactor.text("abc longer-secret True") == f"abc {REDACTED} True"


def test_nested_secrets_are_collected_and_longest_first() -> None:
    redactor = Redactor([{"db": ["pass-word", "pass-word-extended"]}])
    assert redactor.text("pass-word-extended") == REDACTED
    assert redactor.value({"a": ["x pass-word y"]}) == {"a": [f"x {REDACTED} y"]}


def test_mask_follows_terraform_sensitivity_mirror() -> None:
    value = {"name": "svc", "password": "p", "tags": ["a", "b"], "none": None}
    sensitive = {"password": True, "tags": [False, True], "none": True}
    assert mask(value, sensitive) == {
        "name": "svc",
        "password": REDACTED,
        "tags": ["a", REDACTED],
        "none": None,
    }
    assert mask("whole", True) == REDACTED
    assert mask("plain", False) == "plain"


def test_plan_json_masks_variables_outputs_and_resource_changes() -> None:
    plan = {
        "variables": {"token": {"value": "t0ken-value"}, "name": {"value": "svc"}},
        "planned_values": {
            "outputs": {"secret": {"sensitive": True, "value": "out-secret"}},
            "root_module": {
                "resources": [
                    {"values": {"input": "in-secret"}, "sensitive_values": {"input": True}}
                ],
                "child_modules": [
                    {
                        "resources": [
                            {"values": {"k": "child-secret"}, "sensitive_values": {"k": True}}
                        ]
                    }
                ],
            },
        },
        "resource_changes": [
            {
                "address": "x",
                "change": {
                    "before": {"input": "old-secret"},
                    "after": {"input": "new-secret"},
                    "before_sensitive": {"input": True},
                    "after_sensitive": {"input": True},
                },
            }
        ],
        "output_changes": {"secret": {"after": "out-secret", "after_sensitive": True}},
        "configuration": {"note": "mentions t0ken-value"},
    }
    redactor = Redactor(["t0ken-value"])
    masked = redactor.plan_json(plan, sensitive_variables=["token"])
    text = repr(masked)
    for secret in (
        "t0ken-value",
        "out-secret",
        "in-secret",
        "child-secret",
        "old-secret",
        "new-secret",
    ):
        assert secret not in text
    assert masked["variables"]["name"] == {"value": "svc"}
    assert masked["configuration"] == {"note": f"mentions {REDACTED}"}


def test_multi_line_secrets_are_redacted_line_by_line_and_whole() -> None:
    key = (
        "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG\n  9w0BAQEFAASC  \n"
        "-----END PRIVATE KEY-----"
    )
    redactor = Redactor.from_env({"TF_VAR_tls_key": key, "DEPLOY_SECRET": "line-one\r\nline-two"})
    for line in [*key.splitlines(), "line-one", "line-two"]:
        assert line.strip() not in redactor.text(f"printed: {line}"), line
    assert redactor.value({"pem": key}) == {"pem": REDACTED}
    # A PEM private key is a secret whatever its variable is called.
    assert Redactor.from_env({"TLS": key}).text("MIIEvQIBADANBgkqhkiG") == REDACTED


def test_sensitive_defaults_of_any_type_are_masked_in_the_configuration() -> None:
    plan = {
        "configuration": {
            "root_module": {
                "variables": {
                    "pin": {"default": 4242424242, "sensitive": True},
                    "tags": {"default": {"k": "v"}},
                    "plain": {"default": [1, 2]},
                },
                "module_calls": {
                    "child": {"module": {"variables": {"m": {"default": 7, "sensitive": True}}}}
                },
            }
        }
    }
    masked = Redactor().plan_json(plan, sensitive_variables=["tags"])
    root = masked["configuration"]["root_module"]
    assert root["variables"]["pin"]["default"] == REDACTED
    assert root["variables"]["tags"]["default"] == REDACTED
    assert root["variables"]["plain"]["default"] == [1, 2]
    assert root["module_calls"]["child"]["module"]["variables"]["m"]["default"] == REDACTED
    # A number that is itself a known secret is masked wherever it appears.
    assert Redactor([4242424242]).value({"n": 4242424242, "m": 42}) == {"n": REDACTED, "m": 42}
