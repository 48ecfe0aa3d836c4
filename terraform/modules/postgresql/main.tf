# One PostgreSQL cluster (RDS, Multi-AZ) holding Madoguchi's catalog and one database
# per municipality. The service connects with sslmode=verify-full (the cluster refuses
# anything else) as a role of its own with CREATEDB and CREATEROLE, made once after
# the first apply (terraform/README.md); the master user stays in Secrets Manager.
# The parameters follow infra/postgresql/madoguchi.conf.

resource "aws_db_subnet_group" "this" {
  name       = var.name
  subnet_ids = var.subnet_ids
}

resource "aws_security_group" "db" {
  name        = "${var.name}-db"
  description = "PostgreSQL: reached from the service's machine only"
  vpc_id      = var.vpc_id
}

resource "aws_vpc_security_group_ingress_rule" "from_service" {
  security_group_id            = aws_security_group.db.id
  description                  = "PostgreSQL from the service"
  ip_protocol                  = "tcp"
  from_port                    = var.port
  to_port                      = var.port
  referenced_security_group_id = var.client_sg_id
}

locals {
  # The service sets autovacuum_naptime with ALTER SYSTEM, which RDS does not allow;
  # its log then names the value, which is this one (60 s up to 180 databases, then
  # 120, 300 and 600 s from 901).
  naptime = (var.databases_expected <= 180 ? 60 :
    var.databases_expected <= 360 ? 120 :
  var.databases_expected <= 900 ? 300 : 600)
}

resource "aws_db_parameter_group" "this" {
  name   = var.name
  family = "postgres${var.major_version}"

  # TLS only, SCRAM only.
  parameter {
    name  = "rds.force_ssl"
    value = "1"
  }
  parameter {
    name  = "ssl_min_protocol_version"
    value = "TLSv1.2"
  }
  parameter {
    name  = "password_encryption"
    value = "scram-sha-256"
  }
  # Durability: nothing acknowledged is lost.
  parameter {
    name  = "synchronous_commit"
    value = "on"
  }
  parameter {
    name         = "max_connections"
    value        = tostring(var.max_connections)
    apply_method = "pending-reboot"
  }
  parameter {
    name  = "autovacuum_naptime"
    value = tostring(local.naptime)
  }
  # Logs without personal data: no statement, neither slow nor failing.
  parameter {
    name  = "log_min_duration_statement"
    value = "-1"
  }
  parameter {
    name  = "log_min_error_statement"
    value = "panic"
  }
  parameter {
    name  = "log_statement"
    value = "none"
  }
  parameter {
    name  = "log_connections"
    value = "0"
  }
  parameter {
    name  = "log_disconnections"
    value = "0"
  }
}

# PostgreSQL's log (no statements, see the parameters): made here, before RDS would
# make it unencrypted and kept forever.
resource "aws_cloudwatch_log_group" "postgresql" {
  name              = "/aws/rds/instance/${var.name}/postgresql"
  retention_in_days = 400
  kms_key_id        = var.logs_kms_key
}

data "aws_iam_policy_document" "monitoring_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["monitoring.rds.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "monitoring" {
  name               = "${var.name}-rds-monitoring"
  assume_role_policy = data.aws_iam_policy_document.monitoring_assume.json
}

resource "aws_iam_role_policy_attachment" "monitoring" {
  role       = aws_iam_role.monitoring.name
  policy_arn = "arn:aws:iam::aws:policy/service-role/AmazonRDSEnhancedMonitoringRole"
}

resource "aws_db_instance" "this" {
  #checkov:skip=CKV_AWS_161:IAM authentication does not fit: the service makes one role per municipality, with a random password (SCRAM) wrapped by its master key
  identifier     = var.name
  engine         = "postgres"
  engine_version = var.major_version
  instance_class = var.instance_class
  multi_az       = true
  port           = var.port

  allocated_storage     = var.allocated_gib
  max_allocated_storage = var.max_allocated_gib
  storage_type          = "gp3"
  storage_encrypted     = true
  kms_key_id            = var.kms_key_arn

  db_name                       = null
  username                      = "madoguchi_master"
  manage_master_user_password   = true
  master_user_secret_kms_key_id = var.kms_key_arn

  db_subnet_group_name   = aws_db_subnet_group.this.name
  vpc_security_group_ids = [aws_security_group.db.id]
  publicly_accessible    = false
  parameter_group_name   = aws_db_parameter_group.this.name
  ca_cert_identifier     = "rds-ca-rsa2048-g1"

  backup_retention_period   = var.pitr_days
  backup_window             = "17:00-18:00" # 02:00-03:00 JST
  maintenance_window        = "sun:18:30-sun:19:30"
  copy_tags_to_snapshot     = true
  deletion_protection       = true
  skip_final_snapshot       = false
  final_snapshot_identifier = "${var.name}-final"
  delete_automated_backups  = true

  auto_minor_version_upgrade      = true
  enabled_cloudwatch_logs_exports = ["postgresql"]
  monitoring_interval             = 60
  monitoring_role_arn             = aws_iam_role.monitoring.arn
  performance_insights_enabled    = true
  performance_insights_kms_key_id = var.kms_key_arn
  # Performance Insights shows statements as sent: placeholders ($1), never the values.
  performance_insights_retention_period = 7

  depends_on = [aws_cloudwatch_log_group.postgresql, aws_iam_role_policy_attachment.monitoring]
}
