output "dns_name" {
  description = "The load balancer's DNS name."
  value       = aws_lb.this.dns_name
}

output "security_group_id" {
  description = "The load balancer's security group."
  value       = aws_security_group.lb.id
}

output "target_group_arn" {
  description = "The service's target group."
  value       = aws_lb_target_group.service.arn
}
