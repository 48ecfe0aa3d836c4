output "endpoint" {
  description = "Host name of the cluster (its certificate carries it)."
  value       = aws_db_instance.this.address
}

output "port" {
  description = "PostgreSQL's port."
  value       = aws_db_instance.this.port
}

output "master_secret_arn" {
  description = "Secrets Manager secret of the RDS master user."
  value       = aws_db_instance.this.master_user_secret[0].secret_arn
}
