# Customer-managed keys, one per purpose, rotated yearly by KMS. They encrypt what
# AWS stores for the deployment; the municipalities' data keys are Madoguchi's own,
# wrapped by its master key (/var/lib/madoguchi/master.key on the encrypted state
# volume), and never reach KMS.

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

locals {
  account = data.aws_caller_identity.current.account_id
  root    = "arn:${data.aws_partition.current.partition}:iam::${local.account}:root"
}

# The account's administrators manage the keys; services use them through their own
# grants (RDS, EBS) or the policies of the roles that hold them.
data "aws_iam_policy_document" "default" {
  # A key policy's "*" is the key itself; the account root is AWS's default key administrator.
  #checkov:skip=CKV_AWS_111:key policy: "*" is this key
  #checkov:skip=CKV_AWS_356:key policy: "*" is this key
  #checkov:skip=CKV_AWS_109:key policy: the account administers its own key
  statement {
    sid       = "AccountAdministers"
    actions   = ["kms:*"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = [local.root]
    }
  }
}

data "aws_iam_policy_document" "logs" {
  source_policy_documents = [data.aws_iam_policy_document.default.json]
  statement {
    sid       = "CloudWatchLogsEncrypt"
    actions   = ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
    resources = ["*"]
    principals {
      type        = "Service"
      identifiers = ["logs.${var.region}.amazonaws.com"]
    }
    condition {
      test     = "ArnLike"
      variable = "kms:EncryptionContext:aws:logs:arn"
      values   = ["arn:${data.aws_partition.current.partition}:logs:${var.region}:${local.account}:*"]
    }
  }
}

locals {
  purposes = {
    storage = "database storage, its snapshots and Performance Insights; the service's disks"
    backups = "off-site copies of the encrypted backups"
    logs    = "CloudWatch logs (VPC flow logs, PostgreSQL's log)"
  }
}

resource "aws_kms_key" "this" {
  for_each                = local.purposes
  description             = "${var.name}: ${each.value}"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = each.key == "logs" ? data.aws_iam_policy_document.logs.json : data.aws_iam_policy_document.default.json
}

resource "aws_kms_alias" "this" {
  for_each      = local.purposes
  name          = "alias/${var.name}-${each.key}"
  target_key_id = aws_kms_key.this[each.key].key_id
}
