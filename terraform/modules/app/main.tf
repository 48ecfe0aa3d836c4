# The machine that runs `madoguchi serve`: the front tier and the control plane
# together, on one state directory (/var/lib/madoguchi: master key, backups, exports,
# certificates) on an encrypted volume of its own that outlives the instance.
# Operators reach it through Session Manager: no SSH port, no key pair.
#
# The first boot (cloud-init.sh) prepares the machine: PostgreSQL's client programs,
# the AWS CLI, the madoguchi user, the state volume, the cluster's CA bundle, a
# certificate for the HTTPS listener, /etc/madoguchi/env and the systemd units from
# infra/systemd. The madoguchi binary itself is installed by the operator
# (terraform/README.md), as is database_url in madoguchi.toml.

data "aws_ami" "debian" {
  most_recent = true
  owners      = ["136693071363"] # Debian's own account
  filter {
    name   = "name"
    values = ["debian-13-${var.architecture == "arm64" ? "arm64" : "amd64"}-*"]
  }
  filter {
    name   = "architecture"
    values = [var.architecture]
  }
}

data "aws_partition" "current" {}

resource "aws_security_group" "service" {
  name        = "${var.name}-service"
  description = "The service: HTTPS from the load balancer; out to PostgreSQL, HTTPS and the SMTP relay"
  vpc_id      = var.vpc_id
}

resource "aws_vpc_security_group_ingress_rule" "from_lb" {
  security_group_id            = aws_security_group.service.id
  description                  = "HTTPS from the load balancer"
  ip_protocol                  = "tcp"
  from_port                    = 8443
  to_port                      = 8443
  referenced_security_group_id = var.lb_sg_id
}

resource "aws_vpc_security_group_egress_rule" "postgresql" {
  security_group_id = aws_security_group.service.id
  description       = "PostgreSQL in the VPC"
  ip_protocol       = "tcp"
  from_port         = var.db_port
  to_port           = var.db_port
  cidr_ipv4         = data.aws_vpc.this.cidr_block
}

resource "aws_vpc_security_group_egress_rule" "https" {
  security_group_id = aws_security_group.service.id
  description       = "HTTPS: identity providers, AWS APIs, packages"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_vpc_security_group_egress_rule" "http_packages" {
  security_group_id = aws_security_group.service.id
  description       = "HTTP: Debian's package mirror (signed packages)"
  ip_protocol       = "tcp"
  from_port         = 80
  to_port           = 80
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_vpc_security_group_egress_rule" "smtp" {
  for_each          = { for pair in setproduct(var.smtp_cidrs, [25, 465, 587]) : "${pair[0]}:${pair[1]}" => pair }
  security_group_id = aws_security_group.service.id
  description       = "SMTP relay ${each.key}"
  ip_protocol       = "tcp"
  from_port         = each.value[1]
  to_port           = each.value[1]
  cidr_ipv4         = each.value[0]
}

data "aws_vpc" "this" {
  id = var.vpc_id
}

data "aws_iam_policy_document" "assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

# The off-site mirror: list, read, write and delete in its bucket, with its key.
data "aws_iam_policy_document" "offsite" {
  statement {
    actions   = ["s3:ListBucket"]
    resources = ["arn:${data.aws_partition.current.partition}:s3:::${var.backup_bucket}"]
  }
  statement {
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"]
    resources = ["arn:${data.aws_partition.current.partition}:s3:::${var.backup_bucket}/*"]
  }
  statement {
    actions   = ["kms:GenerateDataKey", "kms:Decrypt"]
    resources = [var.backups_kms_key]
  }
}

resource "aws_iam_role" "service" {
  name               = "${var.name}-service"
  assume_role_policy = data.aws_iam_policy_document.assume.json
}

resource "aws_iam_role_policy" "offsite" {
  name   = "offsite-backups"
  role   = aws_iam_role.service.id
  policy = data.aws_iam_policy_document.offsite.json
}

resource "aws_iam_role_policy_attachment" "ssm" {
  role       = aws_iam_role.service.name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"
}

resource "aws_iam_instance_profile" "service" {
  name = "${var.name}-service"
  role = aws_iam_role.service.name
}

resource "aws_instance" "service" {
  ami                    = data.aws_ami.debian.id
  instance_type          = var.instance_type
  subnet_id              = var.subnet_id
  vpc_security_group_ids = [aws_security_group.service.id]
  iam_instance_profile   = aws_iam_instance_profile.service.name
  ebs_optimized          = true
  monitoring             = true

  metadata_options {
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
    http_endpoint               = "enabled"
  }

  root_block_device {
    volume_type = "gp3"
    volume_size = 30
    encrypted   = true
    kms_key_id  = var.storage_kms_key
  }

  user_data_replace_on_change = false
  user_data = templatefile("${path.module}/cloud-init.sh", {
    region          = var.region
    db_host         = var.db_endpoint
    db_port         = var.db_port
    trusted_proxies = join(",", var.trusted_proxies)
    backup_bucket   = var.backup_bucket
    backups_kms_key = var.backups_kms_key
    state_volume_id = aws_ebs_volume.state.id
    systemd_unit    = var.systemd_unit
    offsite_unit    = var.offsite_unit
    offsite_timer   = var.offsite_timer
    scan_unit       = var.scan_files_unit
    scan_timer      = var.scan_files_timer
  })

  tags = { Name = "${var.name}-service" }

  # user_data runs at the first boot only: a changed unit file would otherwise stop and
  # start the machine and still not reach it (terraform/README.md, "Updating").
  lifecycle {
    ignore_changes = [ami, user_data]
  }
}

# The state directory: kept when the instance is replaced (attach it to the new one).
resource "aws_ebs_volume" "state" {
  availability_zone = data.aws_subnet.this.availability_zone
  size              = var.state_volume_gib
  type              = "gp3"
  encrypted         = true
  kms_key_id        = var.storage_kms_key
  tags              = { Name = "${var.name}-state" }

  lifecycle {
    prevent_destroy = true
  }
}

data "aws_subnet" "this" {
  id = var.subnet_id
}

resource "aws_volume_attachment" "state" {
  device_name                    = "/dev/sdf"
  volume_id                      = aws_ebs_volume.state.id
  instance_id                    = aws_instance.service.id
  stop_instance_before_detaching = true
}

resource "aws_lb_target_group_attachment" "service" {
  target_group_arn = var.target_group_arn
  target_id        = aws_instance.service.id
  port             = 8443
}
