# The network: an existing subnet (var.subnet_id), or a VPC with one public subnet
# made here; and the cluster's security group.

data "aws_availability_zones" "available" {
  count = var.subnet_id == "" && var.zone == "" ? 1 : 0
  state = "available"
}

data "aws_subnet" "existing" {
  count = var.subnet_id == "" ? 0 : 1
  id    = var.subnet_id
}

resource "aws_vpc" "ray" {
  count                = var.subnet_id == "" ? 1 : 0
  cidr_block           = var.vpc_cidr
  enable_dns_support   = true
  enable_dns_hostnames = true

  tags = { Name = "ray-${var.cluster_name}" }
}

resource "aws_internet_gateway" "ray" {
  count  = var.subnet_id == "" ? 1 : 0
  vpc_id = aws_vpc.ray[0].id

  tags = { Name = "ray-${var.cluster_name}" }
}

resource "aws_subnet" "ray" {
  count             = var.subnet_id == "" ? 1 : 0
  vpc_id            = aws_vpc.ray[0].id
  cidr_block        = var.subnet_cidr
  availability_zone = var.zone != "" ? var.zone : data.aws_availability_zones.available[0].names[0]
  # Workers get public addresses too, so they can download the project.
  map_public_ip_on_launch = true

  tags = { Name = "ray-${var.cluster_name}" }
}

resource "aws_route_table" "ray" {
  count  = var.subnet_id == "" ? 1 : 0
  vpc_id = aws_vpc.ray[0].id

  route {
    cidr_block = "0.0.0.0/0"
    gateway_id = aws_internet_gateway.ray[0].id
  }

  tags = { Name = "ray-${var.cluster_name}" }
}

resource "aws_route_table_association" "ray" {
  count          = var.subnet_id == "" ? 1 : 0
  subnet_id      = aws_subnet.ray[0].id
  route_table_id = aws_route_table.ray[0].id
}

locals {
  subnet_id = var.subnet_id != "" ? var.subnet_id : aws_subnet.ray[0].id
  vpc_id    = var.subnet_id != "" ? data.aws_subnet.existing[0].vpc_id : aws_vpc.ray[0].id
  zone      = var.subnet_id != "" ? data.aws_subnet.existing[0].availability_zone : aws_subnet.ray[0].availability_zone
}

# One group for the head and every worker the autoscaler launches (the cluster
# YAML gives it to the workers).
resource "aws_security_group" "ray" {
  name        = "ray-${var.cluster_name}"
  description = "Ray cluster ${var.cluster_name}: traffic between its nodes, SSH from ssh_cidrs, the dashboard from dashboard_cidrs"
  vpc_id      = local.vpc_id

  tags = { Name = "ray-${var.cluster_name}" }
}

# Every port between the cluster's nodes: the GCS (6379), raylets, object
# transfers and workers use ports picked at run time.
resource "aws_vpc_security_group_ingress_rule" "intra_cluster" {
  security_group_id            = aws_security_group.ray.id
  description                  = "Between the nodes of the Ray cluster"
  referenced_security_group_id = aws_security_group.ray.id
  ip_protocol                  = "-1"
}

resource "aws_vpc_security_group_ingress_rule" "ssh" {
  for_each          = toset(var.ssh_cidrs)
  security_group_id = aws_security_group.ray.id
  description       = "SSH"
  cidr_ipv4         = each.value
  ip_protocol       = "tcp"
  from_port         = 22
  to_port           = 22
}

# Closed unless dashboard_cidrs names who may reach it.
resource "aws_vpc_security_group_ingress_rule" "dashboard" {
  for_each          = toset(var.dashboard_cidrs)
  security_group_id = aws_security_group.ray.id
  description       = "Ray dashboard"
  cidr_ipv4         = each.value
  ip_protocol       = "tcp"
  from_port         = 8265
  to_port           = 8265
}

# Out: package downloads and the EC2 API (the head's autoscaler).
resource "aws_vpc_security_group_egress_rule" "all" {
  security_group_id = aws_security_group.ray.id
  description       = "Everything out"
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "-1"
}
