variable "env" {
  type = string
}

variable "service" {
  type = string
}

output "name" {
  value = "${var.env}-${var.service}"
}
