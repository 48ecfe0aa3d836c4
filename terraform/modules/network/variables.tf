variable "name" {
  description = "Prefix of every resource's name."
  type        = string
}

variable "region" {
  description = "Region of the VPC (for its S3 endpoint)."
  type        = string
}

variable "cidr" {
  description = "Address range of the VPC; a /16 gives six /20 subnets."
  type        = string
}

variable "logs_kms_key" {
  description = "KMS key ARN for the flow log group."
  type        = string
}
