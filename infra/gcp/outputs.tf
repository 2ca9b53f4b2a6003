locals {
  head_public_ip  = google_compute_instance.head.network_interface[0].access_config[0].nat_ip
  head_private_ip = google_compute_instance.head.network_interface[0].network_ip
  ssh             = "ssh ${var.ssh_user}@${local.head_public_ip}"
  on_head         = "source ~/.ray/env.sh &&"
  gcs_addr        = "${local.head_private_ip}:6379"
}

output "head_public_ip" {
  description = "The head's external IPv4 address."
  value       = local.head_public_ip
}

output "head_private_ip" {
  description = "The head's address inside the network (the GCS listens on it, port 6379)."
  value       = local.head_private_ip
}

output "ray_address" {
  description = "RAY_ADDRESS of the cluster, for shells on the head or inside the network."
  value       = local.gcs_addr
}

output "ssh_command" {
  description = "SSH to the head (with ssh_public_key's private key; else: gcloud compute ssh)."
  value       = local.ssh
}

output "ray_status_command" {
  description = "The cluster's nodes, usage and pending demand, from here."
  value       = "${local.ssh} '${local.on_head} ray status --address ${local.gcs_addr}'"
}

output "ray_commands" {
  description = "How to use the cluster."
  value       = <<-EOT
    # On the head (setup log: sudo tail -f /var/log/ray-head-setup.log):
    ${local.ssh}
    #   or: gcloud compute ssh ${google_compute_instance.head.name} --zone ${local.zone} --project ${var.project_id}
    export RAY_ADDRESS=${local.gcs_addr}   # ~/.ray/env.sh sets it too
    ray status --address ${local.gcs_addr}
    ray monitor                            # the autoscaler's log
    python -c 'import ray; ray.init(); print(ray.cluster_resources())'
    # From here, one command at a time:
    ${local.ssh} '${local.on_head} ray status'
    # Before terraform destroy, end the workers the autoscaler launched:
    ${local.ssh} '${local.on_head} ray stop && ray down ~/ray_bootstrap_config.yaml --workers-only --yes --from-provider'
  EOT
}

output "cluster_token" {
  description = "The cluster token (null when the head made its own: ssh to the head and read ~/.ray/auth_token)."
  value       = local.cluster_token != "" ? local.cluster_token : null
  sensitive   = true
}

output "head_service_account" {
  description = "The head's service account (the autoscaler's permissions)."
  value       = google_service_account.head.email
}

output "worker_service_account" {
  description = "The workers' service account: grant it what your tasks call (worker_roles)."
  value       = google_service_account.worker.email
}

output "network_tag" {
  description = "The network tag of the cluster's nodes (the firewall rules' target)."
  value       = local.network_tag
}
