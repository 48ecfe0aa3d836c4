terraform {
  required_version = ">= 1.10" # use_lockfile of the S3 backend
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.70, < 7.0"
    }
  }
  # State holds the database's endpoint and the resources' names, no secret: the
  # database's master password stays in Secrets Manager (RDS manages it). Keep state
  # in an encrypted, versioned bucket of the operator's account, in Japan:
  #   terraform init -backend-config="bucket=..." -backend-config="key=madoguchi/prod.tfstate" \
  #     -backend-config="region=ap-northeast-1" -backend-config="encrypt=true" -backend-config="use_lockfile=true"
  backend "s3" {}
}

provider "aws" {
  region = var.region
  default_tags {
    tags = {
      Project     = "madoguchi"
      Environment = var.environment
    }
  }
}
