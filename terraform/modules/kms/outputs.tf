output "storage_key_arn" {
  description = "Key for the database's storage and the service's volumes."
  value       = aws_kms_key.this["storage"].arn
}

output "backups_key_arn" {
  description = "Key for the off-site backup bucket."
  value       = aws_kms_key.this["backups"].arn
}

output "logs_key_arn" {
  description = "Key for CloudWatch log groups."
  value       = aws_kms_key.this["logs"].arn
}
