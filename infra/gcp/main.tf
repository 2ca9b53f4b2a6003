# The head node: its cluster token and instance. Its startup script is
# infra/cloud-init/head-user-data.sh.tftpl, which runs
# infra/cloud-init/ray-head-setup.sh with the settings below.

resource "random_password" "cluster_token" {
  count   = var.generate_cluster_token && nonsensitive(var.cluster_token == "") ? 1 : 0
  length  = 64
  special = false
}

locals {
  # Empty: the head makes its own token at first boot.
  cluster_token = var.cluster_token != "" ? var.cluster_token : (
    length(random_password.cluster_token) > 0 ? random_password.cluster_token[0].result : ""
  )

  # What ray-head-setup.sh reads; it writes the cluster YAML from these.
  head_env = {
    RAY_PROVIDER               = "gcp"
    RAY_CLUSTER_NAME           = var.cluster_name
    RAY_REGION                 = var.region
    RAY_ZONE                   = local.zone
    RAY_GCP_PROJECT            = var.project_id
    RAY_HEAD_INSTANCE_TYPE     = var.head_instance_type
    RAY_WORKER_INSTANCE_TYPE   = var.worker_instance_type
    RAY_MIN_WORKERS            = tostring(var.min_workers)
    RAY_MAX_WORKERS            = tostring(var.max_workers)
    RAY_IDLE_TIMEOUT_MINUTES   = tostring(var.idle_timeout_minutes)
    RAY_HEAD_RESOURCES         = "{}"
    RAY_WORKER_RESOURCES       = jsonencode(var.worker_resources)
    RAY_WORKER_IMAGE           = var.image
    RAY_WORKER_DISK_GB         = tostring(var.disk_size_gb)
    RAY_NETWORK                = local.network_id
    RAY_SUBNETWORK             = local.subnetwork_id
    RAY_NETWORK_TAG            = local.network_tag
    RAY_WORKER_SERVICE_ACCOUNT = google_service_account.worker.email
    RAY_WORKER_EXTERNAL_IP     = var.worker_external_ip ? "1" : "0"
    RAY_SSH_USER               = var.ssh_user
    RAY_USER                   = var.ssh_user
    RAY_INSTALL_SPEC           = var.install_spec
    RAY_LINK_BIN               = "/usr/local/bin/ray"
  }
}

resource "google_compute_instance" "head" {
  name         = "ray-${var.cluster_name}-head"
  machine_type = var.head_instance_type
  zone         = local.zone
  tags         = [local.network_tag]
  # Not labelled as one of the autoscaler's nodes: it never counts or deletes the head.
  labels = merge(var.labels, { "ray-head-of" = var.cluster_name })

  boot_disk {
    initialize_params {
      image = var.image
      size  = var.disk_size_gb
      type  = "pd-balanced"
    }
  }

  network_interface {
    network    = local.subnetwork_id == "" ? local.network_id : null
    subnetwork = local.subnetwork_id != "" ? local.subnetwork_id : null

    access_config {} # an ephemeral external address, for SSH from ssh_cidrs
  }

  service_account {
    email  = google_service_account.head.email
    scopes = ["cloud-platform"] # what it may do is its IAM roles (iam.tf)
  }

  # The startup script runs at every boot: it (re)starts Ray with these settings.
  metadata = merge(
    {
      startup-script = templatefile("${path.module}/../cloud-init/head-user-data.sh.tftpl", {
        env           = local.head_env
        cluster_token = local.cluster_token
        setup_script  = file("${path.module}/../cloud-init/ray-head-setup.sh")
        setup_dir     = "/var/lib/ray-setup"
        setup_log     = "/var/log/ray-head-setup.log"
      })
    },
    var.ssh_public_key != "" ? { ssh-keys = "${var.ssh_user}:${trimspace(var.ssh_public_key)}" } : {},
  )

  shielded_instance_config {
    enable_secure_boot = true
  }

  allow_stopping_for_update = true

  lifecycle {
    ignore_changes = [boot_disk[0].initialize_params[0].image]
  }

  depends_on = [
    google_project_iam_member.head_compute,
    google_service_account_iam_member.head_acts_as_worker,
    google_compute_firewall.internal,
  ]
}
