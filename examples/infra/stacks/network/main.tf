terraform {
  required_providers {
    null = { source = "hashicorp/null", version = "2.1.2" }
  }
}

resource "null_resource" "vpc" {
  triggers = {
    cidr = "10.0.0.0/16"
  }
}

resource "null_resource" "subnet" {
  count = 2
  triggers = {
    cidr = cidrsubnet("10.0.0.0/16", 8, count.index)
  }
}

output "vpc_cidr" {
  value = null_resource.vpc.triggers.cidr
}
