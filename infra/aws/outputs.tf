locals {
  head_ip  = aws_instance.head.public_ip != "" ? aws_instance.head.public_ip : aws_instance.head.private_ip
  ssh      = "ssh ${var.ssh_user}@${local.head_ip}"
  on_head  = "source ~/.ray/env.sh &&"
  gcs_addr = "${aws_instance.head.private_ip}:6379"
}

output "head_public_ip" {
  description = "The head's public IPv4 address (empty without associate_public_ip)."
  value       = aws_instance.head.public_ip
}

output "head_private_ip" {
  description = "The head's address inside the VPC (the GCS listens on it, port 6379)."
  value       = aws_instance.head.private_ip
}

output "ray_address" {
  description = "RAY_ADDRESS of the cluster, for shells on the head or inside the VPC."
  value       = local.gcs_addr
}

output "ssh_command" {
  description = "SSH to the head."
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

output "head_role_arn" {
  description = "The head's IAM role (the autoscaler's permissions)."
  value       = aws_iam_role.head.arn
}

output "worker_role_arn" {
  description = "The workers' IAM role: attach policies for what your tasks call (worker_policy_arns)."
  value       = aws_iam_role.worker.arn
}

output "security_group_id" {
  description = "The cluster's security group."
  value       = aws_security_group.ray.id
}
