# Built-ins only (terraform_data, local backend): plans and applies with no provider download.
terraform {
  backend "local" {}
}

variable "name" {
  type = string
}

variable "replicas" {
  type    = number
  default = 1
}

variable "api_token" {
  type      = string
  sensitive = true
  default   = "default-token-value"
}

resource "terraform_data" "service" {
  count = var.replicas
  input = "${var.name}-${count.index}"
}

resource "terraform_data" "credential" {
  input = sha256(var.api_token)
}

output "names" {
  value = terraform_data.service[*].output
}

output "token" {
  value     = var.api_token
  sensitive = true
}
