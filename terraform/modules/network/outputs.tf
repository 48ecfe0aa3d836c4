output "vpc_id" {
  description = "The VPC."
  value       = aws_vpc.this.id
}

output "public_subnet_ids" {
  description = "Subnets of the load balancer."
  value       = aws_subnet.public[*].id
}

output "public_subnet_cidrs" {
  description = "Where the load balancer's nodes are: the service's trusted proxies."
  value       = aws_subnet.public[*].cidr_block
}

output "app_subnet_ids" {
  description = "Subnets for the service's machine."
  value       = aws_subnet.app[*].id
}

output "db_subnet_ids" {
  description = "Subnets of the PostgreSQL cluster."
  value       = aws_subnet.db[*].id
}
