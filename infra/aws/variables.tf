variable "cluster_name" {
  description = "The Ray cluster's name: cluster_name in its YAML, and the prefix of every resource made here."
  type        = string
  default     = "ray"

  validation {
    condition     = can(regex("^[a-z]([-a-z0-9]{0,18}[a-z0-9])?$", var.cluster_name))
    error_message = "cluster_name: 1 to 20 lowercase letters, digits and dashes, starting with a letter."
  }
}

variable "region" {
  description = "The AWS region of the cluster."
  type        = string
  default     = "us-west-2"
}

variable "zone" {
  description = "The availability zone of the head and the workers (and of the subnet made here). Empty: the region's zone \"a\". With subnet_id, the subnet's zone is used."
  type        = string
  default     = ""
}

variable "subnet_id" {
  description = "An existing subnet (and so its VPC) to put the cluster in. Empty: a VPC, a public subnet, an internet gateway and a route table are made."
  type        = string
  default     = ""
}

variable "vpc_cidr" {
  description = "The address range of the VPC made when subnet_id is empty."
  type        = string
  default     = "10.42.0.0/16"
}

variable "subnet_cidr" {
  description = "The address range of the subnet made when subnet_id is empty (inside vpc_cidr)."
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
  description = "The head's EC2 instance type."
  type        = string
  default     = "m5.large"
}

variable "worker_instance_type" {
  description = "The workers' EC2 instance type (their CPUs, GPUs and memory come from it)."
  type        = string
  default     = "m5.large"
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
  description = "The workers' Ray resources, e.g. { CPU = 4 }. Empty: taken from worker_instance_type."
  type        = map(number)
  default     = {}
}

variable "worker_use_spot" {
  description = "Launch workers as spot instances (on-demand when there is no spot capacity)."
  type        = bool
  default     = false
}

variable "image" {
  description = "The AMI of the head and the workers. Empty: the newest Ubuntu 22.04 (x86_64) AMI from Canonical. It needs bash, curl, sudo, python3 >= 3.9 and cloud-init."
  type        = string
  default     = ""
}

variable "disk_size_gb" {
  description = "The root volume of each node, in GiB (a source build of the project needs about 20)."
  type        = number
  default     = 64
}

variable "ssh_user" {
  description = "The image's login user; Ray runs as this user on every node."
  type        = string
  default     = "ubuntu"
}

variable "ssh_public_key" {
  description = "An OpenSSH public key: an EC2 key pair is made from it for the head and the workers. Leave empty to use key_name."
  type        = string
  default     = ""
}

variable "key_name" {
  description = "An existing EC2 key pair for the head and the workers (used when ssh_public_key is empty). Both empty: no key (SSH only through other means, e.g. EC2 Instance Connect)."
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
  description = "When cluster_token is empty: true makes one here (random_password; it is in the Terraform state and the instance's user data, and is the cluster_token output); false lets the head make its own at first boot, which never leaves the head."
  type        = bool
  default     = true
}

variable "associate_public_ip" {
  description = "Give the head a public IPv4 address (for SSH from ssh_cidrs)."
  type        = bool
  default     = true
}

variable "worker_policy_arns" {
  description = "IAM policies to attach to the workers' role (e.g. read access to an S3 bucket). Empty: workers may call no AWS API."
  type        = list(string)
  default     = []
}

variable "tags" {
  description = "Tags added to every resource made here."
  type        = map(string)
  default     = {}
}
