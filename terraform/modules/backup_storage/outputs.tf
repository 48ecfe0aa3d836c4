output "bucket_name" {
  description = "The bucket."
  value       = aws_s3_bucket.this.bucket
}

output "bucket_arn" {
  description = "The bucket's ARN, for the machine's role."
  value       = aws_s3_bucket.this.arn
}
