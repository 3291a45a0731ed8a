stack {
  name = "monitoring"
}
