variable "name" {
  description = "Prefix of the bucket's name."
  type        = string
}

variable "kms_key_arn" {
  description = "KMS key of the bucket's default encryption."
  type        = string
}

variable "noncurrent_days" {
  description = "Days a deleted or replaced copy is kept before it expires."
  type        = number
  validation {
    condition     = var.noncurrent_days >= 1 && var.noncurrent_days <= 30
    error_message = "Between 1 and 30 days: an erased municipality's copies must not outlive the erasure by long."
  }
}
