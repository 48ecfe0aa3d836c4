variable "region" {
  description = "AWS region. Municipalities' data stays in Japan: ap-northeast-1 (Tokyo) or ap-northeast-3 (Osaka)."
  type        = string
  default     = "ap-northeast-1"
  validation {
    condition     = contains(["ap-northeast-1", "ap-northeast-3"], var.region)
    error_message = "Use a region in Japan (ap-northeast-1 or ap-northeast-3)."
  }
}

variable "environment" {
  description = "Name of this deployment (prod, staging); part of every resource's name."
  type        = string
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,15}$", var.environment))
    error_message = "2 to 16 lower-case letters, digits or hyphens, starting with a letter."
  }
}

variable "vpc_cidr" {
  description = "Address range of the VPC (a /16 is split into /20 subnets)."
  type        = string
  default     = "10.20.0.0/16"
}

variable "certificate_arn" {
  description = "ACM certificate for the public host names (e.g. *.madoguchi.example.jp)."
  type        = string
}

variable "extra_certificate_arns" {
  description = "ACM certificates for municipalities' own host names (shinsei.city.example.lg.jp), chosen by SNI."
  type        = list(string)
  default     = []
}

variable "citizen_cidrs" {
  description = "Who may reach the service: the internet by default; citizens apply from anywhere."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "smtp_cidrs" {
  description = "Addresses of the SMTP relay for mail to applicants (ports 25, 465 and 587)."
  type        = list(string)
  default     = []
}

variable "app_instance_type" {
  description = "The machine that runs `madoguchi serve` (front tier and control plane)."
  type        = string
  default     = "m7g.large"
}

variable "app_architecture" {
  description = "arm64 for Graviton instance types (m7g), x86_64 for the others."
  type        = string
  default     = "arm64"
}

variable "state_volume_gib" {
  description = "Size of /var/lib/madoguchi: master key, backups, exports, certificates."
  type        = number
  default     = 200
}

variable "db_instance_class" {
  description = "RDS instance class of the cluster holding the catalog and every municipality's database."
  type        = string
  default     = "db.r7g.large"
}

variable "db_allocated_gib" {
  description = "Initial storage of the database (it grows by itself up to db_max_allocated_gib)."
  type        = number
  default     = 200
}

variable "db_max_allocated_gib" {
  description = "Upper bound of the database's storage autoscaling."
  type        = number
  default     = 1000
}

variable "db_max_connections" {
  description = "max_connections: the service's pool_budget plus 40 (control plane, backups, psql)."
  type        = number
  default     = 200
}

variable "db_pitr_days" {
  description = "Days of RDS automated backups (point-in-time recovery). An erased municipality's database stays in them this long: see terraform/README.md, \"Erasure\"."
  type        = number
  default     = 7
  validation {
    condition     = var.db_pitr_days >= 1 && var.db_pitr_days <= 35
    error_message = "Between 1 and 35 days."
  }
}

variable "offsite_noncurrent_days" {
  description = "Days an off-site backup copy is kept after the service deleted it (retention or erasure)."
  type        = number
  default     = 7
}

variable "alb_access_logs_bucket" {
  description = "Bucket for the load balancer's access logs (client addresses and request lines); empty: none."
  type        = string
  default     = ""
}
