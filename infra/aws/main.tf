# The head node: its image, key, cluster token and instance. Its user data is
# infra/cloud-init/head-user-data.sh.tftpl, which runs
# infra/cloud-init/ray-head-setup.sh with the settings below.

data "aws_ami" "ubuntu" {
  count       = var.image == "" ? 1 : 0
  most_recent = true
  owners      = ["099720109477"] # Canonical

  filter {
    name   = "name"
    values = ["ubuntu/images/hvm-ssd*/ubuntu-jammy-22.04-amd64-server-*"]
  }

  filter {
    name   = "virtualization-type"
    values = ["hvm"]
  }
}

resource "aws_key_pair" "ray" {
  count      = var.ssh_public_key == "" ? 0 : 1
  key_name   = "ray-${var.cluster_name}"
  public_key = var.ssh_public_key
}

resource "random_password" "cluster_token" {
  count   = var.generate_cluster_token && nonsensitive(var.cluster_token == "") ? 1 : 0
  length  = 64
  special = false
}

locals {
  image_id = var.image != "" ? var.image : data.aws_ami.ubuntu[0].id
  key_name = var.ssh_public_key != "" ? aws_key_pair.ray[0].key_name : var.key_name
  # Empty: the head makes its own token at first boot.
  cluster_token = var.cluster_token != "" ? var.cluster_token : (
    length(random_password.cluster_token) > 0 ? random_password.cluster_token[0].result : ""
  )

  # What ray-head-setup.sh reads; it writes the cluster YAML from these.
  head_env = {
    RAY_PROVIDER                    = "aws"
    RAY_CLUSTER_NAME                = var.cluster_name
    RAY_REGION                      = var.region
    RAY_ZONE                        = local.zone
    RAY_HEAD_INSTANCE_TYPE          = var.head_instance_type
    RAY_WORKER_INSTANCE_TYPE        = var.worker_instance_type
    RAY_MIN_WORKERS                 = tostring(var.min_workers)
    RAY_MAX_WORKERS                 = tostring(var.max_workers)
    RAY_IDLE_TIMEOUT_MINUTES        = tostring(var.idle_timeout_minutes)
    RAY_WORKER_RESOURCES            = jsonencode(var.worker_resources)
    RAY_WORKER_IMAGE                = local.image_id
    RAY_WORKER_DISK_GB              = tostring(var.disk_size_gb)
    RAY_WORKER_SPOT                 = var.worker_use_spot ? "1" : "0"
    RAY_SUBNET_ID                   = local.subnet_id
    RAY_SECURITY_GROUP_ID           = aws_security_group.ray.id
    RAY_WORKER_INSTANCE_PROFILE_ARN = aws_iam_instance_profile.worker.arn
    RAY_KEY_NAME                    = local.key_name
    RAY_SSH_USER                    = var.ssh_user
    RAY_USER                        = var.ssh_user
    RAY_INSTALL_SPEC                = var.install_spec
    RAY_LINK_BIN                    = "/usr/local/bin/ray"
  }
}

resource "aws_instance" "head" {
  ami                         = local.image_id
  instance_type               = var.head_instance_type
  availability_zone           = local.zone
  subnet_id                   = local.subnet_id
  vpc_security_group_ids      = [aws_security_group.ray.id]
  iam_instance_profile        = aws_iam_instance_profile.head.name
  key_name                    = local.key_name != "" ? local.key_name : null
  associate_public_ip_address = var.associate_public_ip

  # cloud-init runs this once, at first boot (gzip: EC2 takes at most 16 KiB).
  user_data_base64 = base64gzip(templatefile("${path.module}/../cloud-init/head-user-data.sh.tftpl", {
    env           = local.head_env
    cluster_token = local.cluster_token
    setup_script  = file("${path.module}/../cloud-init/ray-head-setup.sh")
    setup_dir     = "/var/lib/ray-setup"
    setup_log     = "/var/log/ray-head-setup.log"
  }))

  metadata_options {
    http_endpoint = "enabled"
    http_tokens   = "required" # IMDSv2 only
  }

  root_block_device {
    volume_size = var.disk_size_gb
    volume_type = "gp3"
    encrypted   = true
  }

  # Not tagged ray-cluster-name: the autoscaler's role can neither stop nor
  # terminate the head, and never counts it as one of its workers.
  tags = { Name = "ray-${var.cluster_name}-head", "ray-head-of" = var.cluster_name }

  lifecycle {
    # The settings are read at first boot only: change a running cluster in
    # ~/ray_bootstrap_config.yaml on the head (README.md), or replace the head.
    ignore_changes = [ami, user_data_base64]
  }

  depends_on = [aws_iam_role_policy.head_autoscaler, aws_route_table_association.ray]
}
