# One deployment of Madoguchi on AWS: a VPC over two availability zones, a load
# balancer terminating HTTPS, one machine running `madoguchi serve`, one PostgreSQL
# cluster (RDS, Multi-AZ) holding the catalog and every municipality's own database,
# customer-managed KMS keys, and a bucket for off-site copies of the backups.
# What each part is for and what stays the operator's: terraform/README.md.

locals {
  name = "madoguchi-${var.environment}"
}

module "kms" {
  source = "./modules/kms"
  name   = local.name
  region = var.region
}

module "network" {
  source       = "./modules/network"
  name         = local.name
  region       = var.region
  cidr         = var.vpc_cidr
  logs_kms_key = module.kms.logs_key_arn
}

module "postgresql" {
  source             = "./modules/postgresql"
  name               = local.name
  vpc_id             = module.network.vpc_id
  subnet_ids         = module.network.db_subnet_ids
  client_sg_id       = module.app.security_group_id
  kms_key_arn        = module.kms.storage_key_arn
  logs_kms_key       = module.kms.logs_key_arn
  instance_class     = var.db_instance_class
  allocated_gib      = var.db_allocated_gib
  max_allocated_gib  = var.db_max_allocated_gib
  max_connections    = var.db_max_connections
  pitr_days          = var.db_pitr_days
  databases_expected = 1788
}

module "backup_storage" {
  source          = "./modules/backup_storage"
  name            = local.name
  kms_key_arn     = module.kms.backups_key_arn
  noncurrent_days = var.offsite_noncurrent_days
}

module "load_balancer" {
  source                 = "./modules/load_balancer"
  name                   = local.name
  vpc_id                 = module.network.vpc_id
  subnet_ids             = module.network.public_subnet_ids
  target_sg_id           = module.app.security_group_id
  citizen_cidrs          = var.citizen_cidrs
  certificate_arn        = var.certificate_arn
  extra_certificate_arns = var.extra_certificate_arns
  access_logs_bucket     = var.alb_access_logs_bucket
}

module "app" {
  source            = "./modules/app"
  name              = local.name
  region            = var.region
  vpc_id            = module.network.vpc_id
  subnet_id         = module.network.app_subnet_ids[0]
  instance_type     = var.app_instance_type
  architecture      = var.app_architecture
  state_volume_gib  = var.state_volume_gib
  storage_kms_key   = module.kms.storage_key_arn
  backups_kms_key   = module.kms.backups_key_arn
  backup_bucket     = module.backup_storage.bucket_name
  db_endpoint       = module.postgresql.endpoint
  db_port           = module.postgresql.port
  trusted_proxies   = module.network.public_subnet_cidrs
  smtp_cidrs        = var.smtp_cidrs
  lb_sg_id          = module.load_balancer.security_group_id
  target_group_arn  = module.load_balancer.target_group_arn
  systemd_unit      = file("${path.module}/../infra/systemd/madoguchi.service")
  offsite_unit      = file("${path.module}/../infra/systemd/madoguchi-offsite.service")
  offsite_timer     = file("${path.module}/../infra/systemd/madoguchi-offsite.timer")
  scan_files_unit   = file("${path.module}/../infra/systemd/madoguchi-scan-files.service")
  scan_files_timer  = file("${path.module}/../infra/systemd/madoguchi-scan-files.timer")
}
