# The internet-facing entry: HTTPS with the platform's certificate and the
# municipalities' own (SNI), HTTP only to redirect. It forwards to the service's
# HTTPS listener (8443, a certificate made on the machine), so traffic stays
# encrypted inside the VPC too, keeping the Host header by which the service picks
# the municipality, and adds X-Forwarded-For / X-Forwarded-Proto, which the service
# believes from the public subnets only (trusted_proxies).

resource "aws_security_group" "lb" {
  name        = "${var.name}-lb"
  description = "Load balancer: HTTPS and HTTP (redirect) from citizens and staff"
  vpc_id      = var.vpc_id
}

resource "aws_vpc_security_group_ingress_rule" "https" {
  for_each          = toset(var.citizen_cidrs)
  security_group_id = aws_security_group.lb.id
  description       = "HTTPS from ${each.value}"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_ingress_rule" "http" {
  for_each          = toset(var.citizen_cidrs)
  security_group_id = aws_security_group.lb.id
  description       = "HTTP from ${each.value}, redirected to HTTPS"
  ip_protocol       = "tcp"
  from_port         = 80
  to_port           = 80
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_egress_rule" "to_service" {
  security_group_id            = aws_security_group.lb.id
  description                  = "To the service's HTTPS listener"
  ip_protocol                  = "tcp"
  from_port                    = 8443
  to_port                      = 8443
  referenced_security_group_id = var.target_sg_id
}

resource "aws_lb" "this" {
  #checkov:skip=CKV2_AWS_28:the service limits rates per municipality, address and form itself (README, "Settings"); attach AWS WAF where a contract asks for it
  name                       = var.name
  load_balancer_type         = "application"
  internal                   = false
  subnets                    = var.subnet_ids
  security_groups            = [aws_security_group.lb.id]
  drop_invalid_header_fields = true
  enable_deletion_protection = true
  idle_timeout               = 130 # above the service's 120 s limit for uploads

  dynamic "access_logs" {
    for_each = var.access_logs_bucket == "" ? [] : [var.access_logs_bucket]
    content {
      bucket  = access_logs.value
      prefix  = var.name
      enabled = true
    }
  }
}

resource "aws_lb_target_group" "service" {
  name                 = var.name
  port                 = 8443
  protocol             = "HTTPS"
  vpc_id               = var.vpc_id
  target_type          = "instance"
  deregistration_delay = 60 # the service drains in-flight requests on SIGTERM

  health_check {
    path                = "/readyz"
    protocol            = "HTTPS"
    matcher             = "200"
    interval            = 15
    healthy_threshold   = 2
    unhealthy_threshold = 3
  }
}

resource "aws_lb_listener" "https" {
  load_balancer_arn = aws_lb.this.arn
  port              = 443
  protocol          = "HTTPS"
  ssl_policy        = "ELBSecurityPolicy-TLS13-1-2-2021-06"
  certificate_arn   = var.certificate_arn

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.service.arn
  }
}

resource "aws_lb_listener_certificate" "extra" {
  for_each        = toset(var.extra_certificate_arns)
  listener_arn    = aws_lb_listener.https.arn
  certificate_arn = each.value
}

resource "aws_lb_listener" "http" {
  load_balancer_arn = aws_lb.this.arn
  port              = 80
  protocol          = "HTTP"

  default_action {
    type = "redirect"
    redirect {
      port        = "443"
      protocol    = "HTTPS"
      status_code = "HTTP_301"
    }
  }
}
