# IAM: the head's role (what its autoscaler may do with EC2, and nothing else) and
# the workers' role (no permissions unless worker_policy_arns adds some). README.md
# explains each statement.

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

locals {
  account   = data.aws_caller_identity.current.account_id
  partition = data.aws_partition.current.partition
  # EC2 resources of this account in this region.
  ec2_arn = "arn:${local.partition}:ec2:${var.region}:${local.account}"
  # The tag the autoscaler puts on every instance it launches (not on this head).
  cluster_tag = "ray-cluster-name"

  ec2_trust = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "ec2.amazonaws.com" }
      Action    = "sts:AssumeRole"
    }]
  })
}

resource "aws_iam_role" "head" {
  name               = "ray-${var.cluster_name}-head"
  description        = "The head of Ray cluster ${var.cluster_name}: its autoscaler launches and ends the cluster's workers"
  assume_role_policy = local.ec2_trust
}

resource "aws_iam_role_policy" "head_autoscaler" {
  name = "ray-autoscaler"
  role = aws_iam_role.head.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        # Describe calls cannot be limited to resources; they are limited to the region.
        Sid    = "Read"
        Effect = "Allow"
        Action = [
          "ec2:DescribeInstances",
          "ec2:DescribeInstanceStatus",
          "ec2:DescribeInstanceTypes",
          "ec2:DescribeImages",
          "ec2:DescribeSubnets",
          "ec2:DescribeSecurityGroups",
          "ec2:DescribeKeyPairs",
          "ec2:DescribeAvailabilityZones",
        ]
        Resource  = "*"
        Condition = { StringEquals = { "aws:RequestedRegion" = var.region } }
      },
      {
        # New instances only with this cluster's tag (the autoscaler always sets it).
        Sid       = "LaunchClusterInstances"
        Effect    = "Allow"
        Action    = "ec2:RunInstances"
        Resource  = "${local.ec2_arn}:instance/*"
        Condition = { StringEquals = { "aws:RequestTag/${local.cluster_tag}" = var.cluster_name } }
      },
      {
        # What a launch uses: only this cluster's subnet and security group.
        Sid    = "LaunchInto"
        Effect = "Allow"
        Action = "ec2:RunInstances"
        Resource = [
          "${local.ec2_arn}:subnet/${local.subnet_id}",
          "${local.ec2_arn}:security-group/${aws_security_group.ray.id}",
          "${local.ec2_arn}:network-interface/*",
          "${local.ec2_arn}:volume/*",
          "${local.ec2_arn}:key-pair/*",
          "${local.ec2_arn}:spot-instances-request/*",
          "arn:${local.partition}:ec2:${var.region}::image/*",
        ]
      },
      {
        # Tags in the launch call itself.
        Sid    = "TagAtLaunch"
        Effect = "Allow"
        Action = "ec2:CreateTags"
        Resource = [
          "${local.ec2_arn}:instance/*",
          "${local.ec2_arn}:volume/*",
          "${local.ec2_arn}:spot-instances-request/*",
        ]
        Condition = { StringEquals = { "ec2:CreateAction" = "RunInstances" } }
      },
      {
        # Retagging (node status), starting, stopping and terminating: only
        # instances carrying this cluster's tag, so never this head.
        Sid    = "ManageClusterInstances"
        Effect = "Allow"
        Action = [
          "ec2:CreateTags",
          "ec2:StartInstances",
          "ec2:StopInstances",
          "ec2:TerminateInstances",
        ]
        Resource  = "${local.ec2_arn}:instance/*"
        Condition = { StringEquals = { "ec2:ResourceTag/${local.cluster_tag}" = var.cluster_name } }
      },
      {
        # The workers' instance profile, and no other role.
        Sid       = "PassWorkerRole"
        Effect    = "Allow"
        Action    = "iam:PassRole"
        Resource  = aws_iam_role.worker.arn
        Condition = { StringEquals = { "iam:PassedToService" = "ec2.amazonaws.com" } }
      },
    ]
  })
}

resource "aws_iam_instance_profile" "head" {
  name = "ray-${var.cluster_name}-head"
  role = aws_iam_role.head.name
}

resource "aws_iam_role" "worker" {
  name               = "ray-${var.cluster_name}-worker"
  description        = "The workers of Ray cluster ${var.cluster_name} (launched by its head)"
  assume_role_policy = local.ec2_trust
}

resource "aws_iam_role_policy_attachment" "worker" {
  for_each   = toset(var.worker_policy_arns)
  role       = aws_iam_role.worker.name
  policy_arn = each.value
}

resource "aws_iam_instance_profile" "worker" {
  name = "ray-${var.cluster_name}-worker"
  role = aws_iam_role.worker.name
}
