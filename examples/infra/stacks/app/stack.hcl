stack {
  name       = "app"
  depends_on = ["../network"]
  tags       = ["service"]
}
