variable "name" {
  description = "Identifier of the cluster and prefix of its resources."
  type        = string
}

variable "vpc_id" {
  description = "The VPC."
  type        = string
}

variable "subnet_ids" {
  description = "The db tier's subnets (two zones)."
  type        = list(string)
}

variable "client_sg_id" {
  description = "Security group of the service's machine, the only client."
  type        = string
}

variable "kms_key_arn" {
  description = "KMS key for storage, the master secret and Performance Insights."
  type        = string
}

variable "logs_kms_key" {
  description = "KMS key for PostgreSQL's log group."
  type        = string
}

variable "port" {
  description = "PostgreSQL's port."
  type        = number
  default     = 5432
}

variable "major_version" {
  description = "PostgreSQL major version; pg_dump on the service's machine must be this version or newer."
  type        = string
  default     = "17"
}

variable "instance_class" {
  description = "RDS instance class."
  type        = string
}

variable "allocated_gib" {
  description = "Initial storage (GiB)."
  type        = number
}

variable "max_allocated_gib" {
  description = "Storage autoscaling limit (GiB)."
  type        = number
}

variable "max_connections" {
  description = "max_connections: the service's pool_budget plus 40."
  type        = number
}

variable "pitr_days" {
  description = "Days of automated backups (point-in-time recovery)."
  type        = number
}

variable "databases_expected" {
  description = "How many municipalities the cluster is sized for; sets autovacuum_naptime as the service would."
  type        = number
}
