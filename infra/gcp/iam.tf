# IAM: the head's service account may manage instances (its autoscaler launches
# and deletes workers) and attach the workers' service account, and nothing else;
# the workers' service account has no roles unless worker_roles adds some.
# README.md explains the choices.

resource "google_service_account" "head" {
  account_id   = "ray-${var.cluster_name}-head"
  display_name = "Ray cluster ${var.cluster_name}: head (autoscaler)"
}

resource "google_service_account" "worker" {
  account_id   = "ray-${var.cluster_name}-worker"
  display_name = "Ray cluster ${var.cluster_name}: workers"
}

# Launch, label and delete the workers (and their boot disks), in the project.
resource "google_project_iam_member" "head_compute" {
  project = var.project_id
  role    = var.head_compute_role
  member  = "serviceAccount:${google_service_account.head.email}"
}

# Attach the workers' service account to the instances it launches: granted on
# that one service account, not on the project.
resource "google_service_account_iam_member" "head_acts_as_worker" {
  service_account_id = google_service_account.worker.name
  role               = "roles/iam.serviceAccountUser"
  member             = "serviceAccount:${google_service_account.head.email}"
}

resource "google_project_iam_member" "worker" {
  for_each = toset(var.worker_roles)
  project  = var.project_id
  role     = each.value
  member   = "serviceAccount:${google_service_account.worker.email}"
}
