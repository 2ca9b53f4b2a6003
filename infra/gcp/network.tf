# The network: an existing one (var.network, var.subnetwork), or a network with
# one subnetwork made here; and the cluster's firewall rules, which apply to the
# instances carrying the cluster's network tag (the head and every worker).

resource "google_compute_network" "ray" {
  count                   = var.network == "" ? 1 : 0
  name                    = "ray-${var.cluster_name}"
  auto_create_subnetworks = false
}

resource "google_compute_subnetwork" "ray" {
  count                    = var.network == "" ? 1 : 0
  name                     = "ray-${var.cluster_name}"
  region                   = var.region
  network                  = google_compute_network.ray[0].id
  ip_cidr_range            = var.subnet_cidr
  private_ip_google_access = true
}

data "google_compute_network" "existing" {
  count = var.network == "" ? 0 : 1
  name  = var.network
}

data "google_compute_subnetwork" "existing" {
  count  = var.network != "" && var.subnetwork != "" ? 1 : 0
  name   = var.subnetwork
  region = var.region
}

locals {
  zone        = var.zone != "" ? var.zone : "${var.region}-a"
  network_tag = "ray-${var.cluster_name}"
  network_id  = var.network == "" ? google_compute_network.ray[0].id : data.google_compute_network.existing[0].id
  # Empty for an existing auto-mode network without var.subnetwork: GCP picks
  # the network's subnetwork in the region.
  subnetwork_id = var.network == "" ? google_compute_subnetwork.ray[0].id : (
    var.subnetwork != "" ? data.google_compute_subnetwork.existing[0].id : ""
  )
}

# Every port between the cluster's nodes: the GCS (6379), raylets, object
# transfers and workers use ports picked at run time.
resource "google_compute_firewall" "internal" {
  name        = "ray-${var.cluster_name}-internal"
  network     = local.network_id
  description = "Ray cluster ${var.cluster_name}: between its nodes"
  direction   = "INGRESS"
  source_tags = [local.network_tag]
  target_tags = [local.network_tag]

  allow {
    protocol = "tcp"
  }
  allow {
    protocol = "udp"
  }
  allow {
    protocol = "icmp"
  }
}

# A firewall rule without sources would admit everyone: no rule when the list is empty.
resource "google_compute_firewall" "ssh" {
  count         = length(var.ssh_cidrs) > 0 ? 1 : 0
  name          = "ray-${var.cluster_name}-ssh"
  network       = local.network_id
  description   = "Ray cluster ${var.cluster_name}: SSH from ssh_cidrs"
  direction     = "INGRESS"
  source_ranges = var.ssh_cidrs
  target_tags   = [local.network_tag]

  allow {
    protocol = "tcp"
    ports    = ["22"]
  }
}

# Closed unless dashboard_cidrs names who may reach it.
resource "google_compute_firewall" "dashboard" {
  count         = length(var.dashboard_cidrs) > 0 ? 1 : 0
  name          = "ray-${var.cluster_name}-dashboard"
  network       = local.network_id
  description   = "Ray cluster ${var.cluster_name}: the dashboard from dashboard_cidrs"
  direction     = "INGRESS"
  source_ranges = var.dashboard_cidrs
  target_tags   = [local.network_tag]

  allow {
    protocol = "tcp"
    ports    = ["8265"]
  }
}
