# Built-ins only: sensitive variables whose defaults are not strings, used by a resource and an
# output, and a provisioner that prints multi-line secrets from its environment.
terraform {
  backend "local" {}
}

variable "db_passwords" {
  type      = map(string)
  sensitive = true
  default   = { primary = "map-default-secret", replica = "7" }
}

variable "api_keys" {
  type      = list(string)
  sensitive = true
  default   = ["list-default-secret"]
}

variable "pin" {
  type      = number
  sensitive = true
  default   = 4242424242
}

resource "terraform_data" "uses" {
  input = { passwords = var.db_passwords, keys = var.api_keys, pin = var.pin }
}

resource "terraform_data" "prints" {
  provisioner "local-exec" {
    command = "printf '%s\\n' \"$TF_VAR_tls_key\"; printf '%s\\n' \"$DEPLOY_SECRET\""
  }
}

output "pin" {
  value     = var.pin
  sensitive = true
}
