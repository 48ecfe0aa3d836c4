variable "name" {
  description = "Prefix of every resource's name."
  type        = string
}

variable "region" {
  description = "Region (for the cluster's CA bundle and the AWS CLI)."
  type        = string
}

variable "vpc_id" {
  description = "The VPC."
  type        = string
}

variable "subnet_id" {
  description = "An app-tier subnet."
  type        = string
}

variable "instance_type" {
  description = "EC2 instance type."
  type        = string
}

variable "architecture" {
  description = "arm64 or x86_64, matching the instance type."
  type        = string
  validation {
    condition     = contains(["arm64", "x86_64"], var.architecture)
    error_message = "arm64 or x86_64."
  }
}

variable "state_volume_gib" {
  description = "Size of the state volume (GiB)."
  type        = number
}

variable "storage_kms_key" {
  description = "KMS key of the machine's volumes."
  type        = string
}

variable "backups_kms_key" {
  description = "KMS key of the off-site bucket."
  type        = string
}

variable "backup_bucket" {
  description = "The off-site bucket's name."
  type        = string
}

variable "db_endpoint" {
  description = "PostgreSQL's host name."
  type        = string
}

variable "db_port" {
  description = "PostgreSQL's port."
  type        = number
}

variable "trusted_proxies" {
  description = "CIDRs of the load balancer's subnets."
  type        = list(string)
}

variable "smtp_cidrs" {
  description = "Addresses of the SMTP relay."
  type        = list(string)
}

variable "lb_sg_id" {
  description = "The load balancer's security group."
  type        = string
}

variable "target_group_arn" {
  description = "The load balancer's target group for the service."
  type        = string
}

variable "systemd_unit" {
  description = "infra/systemd/madoguchi.service."
  type        = string
}

variable "offsite_unit" {
  description = "infra/systemd/madoguchi-offsite.service."
  type        = string
}

variable "offsite_timer" {
  description = "infra/systemd/madoguchi-offsite.timer."
  type        = string
}

variable "scan_files_unit" {
  description = "infra/systemd/madoguchi-scan-files.service."
  type        = string
}

variable "scan_files_timer" {
  description = "infra/systemd/madoguchi-scan-files.timer."
  type        = string
}
