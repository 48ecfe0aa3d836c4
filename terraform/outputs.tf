output "load_balancer_dns_name" {
  description = "Point every municipality's host name here (CNAME, or an alias record)."
  value       = module.load_balancer.dns_name
}

output "db_endpoint" {
  description = "The cluster's host name, for database_url (sslmode=verify-full)."
  value       = module.postgresql.endpoint
}

output "db_master_secret_arn" {
  description = "Secrets Manager secret with the RDS master user's password (for creating the service's own role, README step 2)."
  value       = module.postgresql.master_secret_arn
}

output "app_instance_id" {
  description = "The service's machine; operators reach it with Session Manager (no SSH)."
  value       = module.app.instance_id
}

output "backup_bucket" {
  description = "Off-site copies of /var/lib/madoguchi/backups."
  value       = module.backup_storage.bucket_name
}
