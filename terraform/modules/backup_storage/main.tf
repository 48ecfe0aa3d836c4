# Off-site copies of /var/lib/madoguchi/backups. The files are already encrypted by
# Madoguchi (each under a key of its own, wrapped by the master key); the bucket adds
# KMS encryption, TLS only, no public access and versioning.
#
# The machine mirrors the directory into the bucket with deletions
# (infra/systemd/madoguchi-offsite.service), so what the service deletes (retention,
# an erasure) leaves the bucket's current view at the next run, and its last version
# expires `noncurrent_days` later. No object lock: an erasure must be able to reach
# the copies.

resource "aws_s3_bucket" "this" {
  #checkov:skip=CKV_AWS_18:reads and deletions are for the account's CloudTrail (S3 data events); a logging bucket per deployment would need its own
  #checkov:skip=CKV2_AWS_62:nothing consumes events of this bucket
  #checkov:skip=CKV_AWS_144:another region would be one more set of copies for every erasure to reach; add replication (with delete markers) where a contract asks for it
  bucket_prefix = "${var.name}-backups-"
}

resource "aws_s3_bucket_public_access_block" "this" {
  bucket                  = aws_s3_bucket.this.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "this" {
  bucket = aws_s3_bucket.this.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_versioning" "this" {
  bucket = aws_s3_bucket.this.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "this" {
  bucket = aws_s3_bucket.this.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = var.kms_key_arn
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "this" {
  bucket = aws_s3_bucket.this.id
  rule {
    id     = "deleted-copies-expire"
    status = "Enabled"
    filter {}
    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_days
    }
    expiration {
      expired_object_delete_marker = true
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }
  depends_on = [aws_s3_bucket_versioning.this]
}

data "aws_iam_policy_document" "tls_only" {
  statement {
    sid       = "DenyWithoutTLS"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.this.arn, "${aws_s3_bucket.this.arn}/*"]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "this" {
  bucket     = aws_s3_bucket.this.id
  policy     = data.aws_iam_policy_document.tls_only.json
  depends_on = [aws_s3_bucket_public_access_block.this]
}
