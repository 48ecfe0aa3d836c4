output "instance_id" {
  description = "The service's machine."
  value       = aws_instance.service.id
}

output "security_group_id" {
  description = "The service's security group (the database lets it in)."
  value       = aws_security_group.service.id
}
