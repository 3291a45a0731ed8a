terraform {
  required_providers {
    null = { source = "hashicorp/null", version = "2.1.2" }
  }
}

module "naming" {
  source  = "../../modules/naming"
  env     = "prod"
  service = "app"
}

resource "null_resource" "service" {
  triggers = {
    name     = module.naming.name
    replicas = "3"
  }
}
