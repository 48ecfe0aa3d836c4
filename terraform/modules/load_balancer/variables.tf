variable "name" {
  description = "Name of the load balancer and prefix of its resources."
  type        = string
}

variable "vpc_id" {
  description = "The VPC."
  type        = string
}

variable "subnet_ids" {
  description = "Public subnets (two zones)."
  type        = list(string)
}

variable "target_sg_id" {
  description = "Security group of the service's machine."
  type        = string
}

variable "citizen_cidrs" {
  description = "Who may connect."
  type        = list(string)
}

variable "certificate_arn" {
  description = "ACM certificate of the default host names."
  type        = string
}

variable "extra_certificate_arns" {
  description = "ACM certificates of municipalities' own host names."
  type        = list(string)
}

variable "access_logs_bucket" {
  description = "Bucket for access logs; empty: none (they hold client addresses and request lines)."
  type        = string
}
