# Two availability zones, three tiers of subnets:
# - public: the load balancer and the NAT gateways, the only tier with a route from the internet;
# - app: the service's machine, out through NAT (identity providers, the SMTP relay, AWS APIs);
# - db: the PostgreSQL cluster, with no route out of the VPC at all.

data "aws_availability_zones" "available" {
  #checkov:skip=CKV_AWS_394:only the first two zones are used; a zone added later changes nothing
  state = "available"
}

locals {
  zones = slice(data.aws_availability_zones.available.names, 0, 2)
  # /20 subnets of the /16: 0-1 public, 2-3 app, 4-5 db.
  public = [for i, _ in local.zones : cidrsubnet(var.cidr, 4, i)]
  app    = [for i, _ in local.zones : cidrsubnet(var.cidr, 4, 2 + i)]
  db     = [for i, _ in local.zones : cidrsubnet(var.cidr, 4, 4 + i)]
}

resource "aws_vpc" "this" {
  cidr_block           = var.cidr
  enable_dns_support   = true
  enable_dns_hostnames = true
  tags                 = { Name = var.name }
}

# Nothing may use the default security group.
resource "aws_default_security_group" "default" {
  vpc_id = aws_vpc.this.id
}

resource "aws_internet_gateway" "this" {
  vpc_id = aws_vpc.this.id
  tags   = { Name = var.name }
}

resource "aws_subnet" "public" {
  count             = length(local.zones)
  vpc_id            = aws_vpc.this.id
  availability_zone = local.zones[count.index]
  cidr_block        = local.public[count.index]
  tags              = { Name = "${var.name}-public-${local.zones[count.index]}" }
}

resource "aws_subnet" "app" {
  count             = length(local.zones)
  vpc_id            = aws_vpc.this.id
  availability_zone = local.zones[count.index]
  cidr_block        = local.app[count.index]
  tags              = { Name = "${var.name}-app-${local.zones[count.index]}" }
}

resource "aws_subnet" "db" {
  count             = length(local.zones)
  vpc_id            = aws_vpc.this.id
  availability_zone = local.zones[count.index]
  cidr_block        = local.db[count.index]
  tags              = { Name = "${var.name}-db-${local.zones[count.index]}" }
}

resource "aws_route_table" "public" {
  vpc_id = aws_vpc.this.id
  route {
    cidr_block = "0.0.0.0/0"
    gateway_id = aws_internet_gateway.this.id
  }
  tags = { Name = "${var.name}-public" }
}

resource "aws_route_table_association" "public" {
  count          = length(local.zones)
  subnet_id      = aws_subnet.public[count.index].id
  route_table_id = aws_route_table.public.id
}

resource "aws_eip" "nat" {
  count  = length(local.zones)
  domain = "vpc"
  tags   = { Name = "${var.name}-nat-${local.zones[count.index]}" }
}

# One per zone: the machine's way out does not depend on the other zone.
resource "aws_nat_gateway" "this" {
  count         = length(local.zones)
  allocation_id = aws_eip.nat[count.index].id
  subnet_id     = aws_subnet.public[count.index].id
  tags          = { Name = "${var.name}-${local.zones[count.index]}" }
  depends_on    = [aws_internet_gateway.this]
}

resource "aws_route_table" "app" {
  count  = length(local.zones)
  vpc_id = aws_vpc.this.id
  route {
    cidr_block     = "0.0.0.0/0"
    nat_gateway_id = aws_nat_gateway.this[count.index].id
  }
  tags = { Name = "${var.name}-app-${local.zones[count.index]}" }
}

resource "aws_route_table_association" "app" {
  count          = length(local.zones)
  subnet_id      = aws_subnet.app[count.index].id
  route_table_id = aws_route_table.app[count.index].id
}

# The db tier keeps the VPC's local route only.
resource "aws_route_table" "db" {
  vpc_id = aws_vpc.this.id
  tags   = { Name = "${var.name}-db" }
}

resource "aws_route_table_association" "db" {
  count          = length(local.zones)
  subnet_id      = aws_subnet.db[count.index].id
  route_table_id = aws_route_table.db.id
}

# Backups go to S3 without crossing NAT.
resource "aws_vpc_endpoint" "s3" {
  vpc_id            = aws_vpc.this.id
  service_name      = "com.amazonaws.${var.region}.s3"
  vpc_endpoint_type = "Gateway"
  route_table_ids   = aws_route_table.app[*].id
  tags              = { Name = "${var.name}-s3" }
}

# Who talked to whom, for an incident's timeline (addresses and ports, no content).
resource "aws_cloudwatch_log_group" "flow" {
  name              = "/${var.name}/vpc-flow"
  retention_in_days = 400
  kms_key_id        = var.logs_kms_key
}

data "aws_iam_policy_document" "flow_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["vpc-flow-logs.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "flow_write" {
  statement {
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"]
    resources = ["${aws_cloudwatch_log_group.flow.arn}:*"]
  }
}

resource "aws_iam_role" "flow" {
  name               = "${var.name}-vpc-flow"
  assume_role_policy = data.aws_iam_policy_document.flow_assume.json
}

resource "aws_iam_role_policy" "flow" {
  name   = "write-flow-logs"
  role   = aws_iam_role.flow.id
  policy = data.aws_iam_policy_document.flow_write.json
}

resource "aws_flow_log" "this" {
  vpc_id          = aws_vpc.this.id
  traffic_type    = "ALL"
  log_destination = aws_cloudwatch_log_group.flow.arn
  iam_role_arn    = aws_iam_role.flow.arn
}
