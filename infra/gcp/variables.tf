variable "project_id" {
  description = "The GCP project of the cluster (the Compute Engine and IAM APIs must be enabled in it)."
  type        = string
}

variable "cluster_name" {
  description = "The Ray cluster's name: cluster_name in its YAML, and the prefix of every resource made here (service account ids are ray-<name>-worker: at most 30 characters)."
  type        = string
  default     = "ray"

  validation {
    condition     = can(regex("^[a-z]([-a-z0-9]{0,17}[a-z0-9])?$", var.cluster_name))
    error_message = "cluster_name: 1 to 19 lowercase letters, digits and dashes, starting with a letter."
  }
}

variable "region" {
  description = "The GCP region of the cluster."
  type        = string
  default     = "us-central1"
}

variable "zone" {
  description = "The zone of the head and the workers. Empty: <region>-a."
  type        = string
  default     = ""
}

variable "network" {
  description = "An existing VPC network's name to put the cluster in. Empty: a network and a subnetwork are made."
  type        = string
  default     = ""
}

variable "subnetwork" {
  description = "With network: the name of its subnetwork in the region (may be empty for an auto-mode network such as \"default\")."
  type        = string
  default     = ""
}

variable "subnet_cidr" {
  description = "The address range of the subnetwork made when network is empty."
  type        = string
  default     = "10.42.0.0/20"
}

variable "ssh_cidrs" {
  description = "IPv4 ranges allowed to reach the nodes' SSH port, e.g. [\"203.0.113.7/32\"]. Required: say which; [] closes SSH."
  type        = list(string)

  validation {
    condition     = alltrue([for c in var.ssh_cidrs : can(cidrnetmask(c))])
    error_message = "ssh_cidrs: IPv4 CIDR blocks, e.g. 203.0.113.7/32."
  }
}

variable "dashboard_cidrs" {
  description = "IPv4 ranges allowed to reach the head's dashboard port 8265. Empty (the default): the port stays closed."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.dashboard_cidrs : can(cidrnetmask(c))])
    error_message = "dashboard_cidrs: IPv4 CIDR blocks, e.g. 203.0.113.7/32."
  }
}

variable "head_instance_type" {
  description = "The head's machine type."
  type        = string
  default     = "n2-standard-2"
}

variable "worker_instance_type" {
  description = "The workers' machine type (set worker_resources to match it)."
  type        = string
  default     = "n2-standard-2"
}

variable "min_workers" {
  description = "Workers the autoscaler keeps running at all times."
  type        = number
  default     = 0

  validation {
    condition     = var.min_workers >= 0 && floor(var.min_workers) == var.min_workers
    error_message = "min_workers: a whole number >= 0."
  }
}

variable "max_workers" {
  description = "Most workers the autoscaler launches."
  type        = number
  default     = 2

  validation {
    condition     = var.max_workers >= 0 && floor(var.max_workers) == var.max_workers
    error_message = "max_workers: a whole number >= 0."
  }
}

variable "idle_timeout_minutes" {
  description = "A worker idle this long is drained and terminated."
  type        = number
  default     = 5
}

variable "worker_resources" {
  description = "The workers' Ray resources; they must match worker_instance_type (n2-standard-2: 2 CPUs)."
  type        = map(number)
  default     = { CPU = 2 }
}

variable "image" {
  description = "The boot image of the head and the workers. It needs bash, curl, sudo and python3 >= 3.9."
  type        = string
  default     = "projects/ubuntu-os-cloud/global/images/family/ubuntu-2204-lts"
}

variable "disk_size_gb" {
  description = "The root volume of each node, in GiB (a source build of the project needs about 20)."
  type        = number
  default     = 64
}

variable "ssh_user" {
  description = "The user of ssh_public_key; Ray runs as this user on every node."
  type        = string
  default     = "ubuntu"
}

variable "ssh_public_key" {
  description = "An OpenSSH public key for ssh_user on the head (instance metadata ssh-keys). Empty: none (use OS Login or gcloud compute ssh)."
  type        = string
  default     = ""
}

variable "install_spec" {
  description = "What `pip install` installs this project (ray-rs) from on every node: a wheel's URL (fastest), `ray @ git+https://github.com/<owner>/<repo>.git@<ref>` (a source build with a Rust toolchain: several minutes per node), or a path. Not `ray` from PyPI: that is Ray itself."
  type        = string

  validation {
    condition     = trimspace(var.install_spec) != "" && !contains(["ray", "ray[default]"], lower(trimspace(var.install_spec)))
    error_message = "install_spec: a wheel URL, a git+https URL or a path of this project; `ray` alone would install Ray from PyPI."
  }
}

variable "cluster_token" {
  description = "The cluster token. Empty: one is generated (see generate_cluster_token)."
  type        = string
  default     = ""
  sensitive   = true

  validation {
    condition     = can(regex("^[!-~]*$", var.cluster_token))
    error_message = "cluster_token: printable ASCII without spaces."
  }
}

variable "generate_cluster_token" {
  description = "When cluster_token is empty: true makes one here (random_password; it is in the Terraform state and the instance's startup-script metadata, and is the cluster_token output); false lets the head make its own at first boot, which never leaves the head."
  type        = bool
  default     = true
}

variable "worker_external_ip" {
  description = "Give workers an external address (they download the project; without one the network needs Cloud NAT)."
  type        = bool
  default     = true
}

variable "head_compute_role" {
  description = "The role the head's service account gets on the project to launch and delete workers. A custom role with fewer permissions can replace it (README.md)."
  type        = string
  default     = "roles/compute.instanceAdmin.v1"
}

variable "worker_roles" {
  description = "Project roles for the workers' service account (e.g. roles/storage.objectViewer). Empty: none."
  type        = list(string)
  default     = []
}

variable "labels" {
  description = "Labels added to the head, its disk and the network resources made here."
  type        = map(string)
  default     = {}
}
