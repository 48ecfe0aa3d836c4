variable "name" {
  description = "Prefix of every resource's name."
  type        = string
}

variable "region" {
  description = "Region whose CloudWatch Logs service may use the logs key."
  type        = string
}
