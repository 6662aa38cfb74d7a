# azprov-debian12.pkr.hcl: a generalized Debian 12 image that azprov provisions on first boot,
# published to an Azure Compute Gallery.
#
# Written against Packer 1.10 with the Azure plugin 2.x (github.com/hashicorp/azure).
#
#   packer init azprov-debian12.pkr.hcl
#   packer build -var subscription_id=... -var azprov_deb=./azprov_0.1.0_all.deb azprov-debian12.pkr.hcl
#
# For Ubuntu 22.04 add:
#   -var image_publisher=Canonical -var image_offer=0001-com-ubuntu-server-jammy -var image_sku=22_04-lts-gen2
# and publish to an image definition of its own.

packer {
  required_plugins {
    azure = {
      source  = "github.com/hashicorp/azure"
      version = ">= 2.0.0"
    }
  }
}

variable "subscription_id" {
  type        = string
  description = "Subscription that holds the gallery (the build VM is created there too)."
}

variable "location" {
  type    = string
  default = "westeurope"
}

variable "vm_size" {
  type    = string
  default = "Standard_D2s_v5"
}

variable "image_publisher" {
  type    = string
  default = "Debian"
}

variable "image_offer" {
  type    = string
  default = "debian-12"
}

variable "image_sku" {
  type        = string
  default     = "12-gen2"
  description = "A -gen2 SKU needs a V2 image definition, a Gen1 SKU a V1 definition."
}

variable "gallery_resource_group" {
  type    = string
  default = "rg-azprov-images"
}

variable "gallery_name" {
  type    = string
  default = "azprovGallery"
}

variable "image_definition" {
  type        = string
  default     = "azprov-debian12"
  description = "Must exist already: az sig image-definition create --os-state Generalized ..."
}

variable "image_version" {
  type    = string
  default = "1.0.0"
}

variable "replication_regions" {
  type    = list(string)
  default = ["westeurope"]
}

variable "azprov_deb" {
  type        = string
  description = "Path of azprov_<version>_all.deb on the machine that runs Packer."
}

source "azure-arm" "azprov" {
  # Authentication: the account of "az login".  Use client_id/client_secret/tenant_id in CI.
  use_azure_cli_auth = true
  subscription_id    = var.subscription_id

  # The build VM comes from a marketplace image, with that image's own agents; Packer
  # provisions it as usual.  Only the captured image is agentless.
  os_type         = "Linux"
  image_publisher = var.image_publisher
  image_offer     = var.image_offer
  image_sku       = var.image_sku
  location        = var.location
  vm_size         = var.vm_size

  shared_image_gallery_destination {
    subscription        = var.subscription_id
    resource_group      = var.gallery_resource_group
    gallery_name        = var.gallery_name
    image_name          = var.image_definition
    image_version       = var.image_version
    replication_regions = var.replication_regions
  }

  azure_tags = {
    provisioning_agent = "azprov"
  }
}

build {
  sources = ["source.azure-arm.azprov"]

  provisioner "file" {
    source      = var.azprov_deb
    destination = "/tmp/azprov.deb"
  }

  # Installs azprov, purges waagent/walinuxagent and cloud-init, fixes up the network config.
  provisioner "shell" {
    execute_command = "chmod +x {{ .Path }}; {{ .Vars }} sudo -E bash '{{ .Path }}'"
    script          = "${path.root}/install-azprov.sh"
  }

  # Put your own provisioners here.

  # Last step.  It replaces the usual "waagent -force -deprovision+user" step of Packer's
  # Azure examples: waagent is gone by now.  "azprov deprovision --force --user" generalizes the
  # guest and removes any admin user azprov provisioned (when the source image was an azprov
  # image).  The build user ("packer") was created by the marketplace image's own agent, not by
  # azprov, so it is deleted here by name ($SUDO_USER), with the sudoers entry that agent gave
  # it.  All in one root shell: once the user is gone, a new sudo would fail.  "azprov check" is
  # the gate: it exits non-zero, and fails the build, unless an image captured now would
  # provision; its output lists each problem with its fix.  skip_clean: Packer cannot remove its
  # script file without the user; Debian and Ubuntu empty /tmp at boot.
  provisioner "shell" {
    execute_command = "chmod +x {{ .Path }}; {{ .Vars }} sudo -E sh '{{ .Path }}'"
    inline = [
      "test -n \"$SUDO_USER\"",
      "test \"$SUDO_USER\" != root",
      "azprov deprovision --force --user",
      "rm -f /etc/sudoers.d/90-cloud-init-users /etc/sudoers.d/waagent",
      "if id \"$SUDO_USER\" >/dev/null 2>&1; then userdel --force --remove \"$SUDO_USER\"; fi",
      "azprov check",
      "sync",
    ]
    inline_shebang = "/bin/sh -ex"
    skip_clean     = true
  }
}
