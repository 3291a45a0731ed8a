stack {
  name = "network"
  tags = ["core"]
}
