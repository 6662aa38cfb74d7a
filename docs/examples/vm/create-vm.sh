#!/usr/bin/env bash
# create-vm.sh: create one VM from an azprov image and show how provisioning went.
#
# The VM is created with the platform agent disabled (--enable-agent false, which sets
# osProfile.linuxConfiguration.provisionVMAgent=false) and SSH keys: azprov reads the admin
# user and keys from IMDS (a password and custom data would come on the provisioning disc).
#
# Written against Azure CLI 2.6x.  Needs: bash >= 4.4, az (logged in).
set -euo pipefail

# ---- settings (override through the environment) ---------------------------------------------
RESOURCE_GROUP="${RESOURCE_GROUP:-rg-azprov-vms}"
LOCATION="${LOCATION:-westeurope}"
VM_NAME="${VM_NAME:-azprov-demo}"
COMPUTER_NAME="${COMPUTER_NAME:-$VM_NAME}"     # the hostname azprov sets (IMDS computerName)
VM_SIZE="${VM_SIZE:-Standard_B2s}"
ADMIN_USER="${ADMIN_USER:-azureuser}"
SSH_PUBLIC_KEY="${SSH_PUBLIC_KEY:-$HOME/.ssh/id_rsa.pub}"
# A gallery image version ID, or an image definition ID for its latest version:
# /subscriptions/<sub>/resourceGroups/<rg>/providers/Microsoft.Compute/galleries/<gallery>/images/<definition>[/versions/<version>]
IMAGE_ID="${IMAGE_ID:?set IMAGE_ID to the gallery image (version) resource ID}"
# ------------------------------------------------------------------------------------------------

log() { printf 'create-vm: %s\n' "$*" >&2; }

[[ -r $SSH_PUBLIC_KEY ]] || { log "no public key at $SSH_PUBLIC_KEY (set SSH_PUBLIC_KEY)"; exit 1; }

az group create --name "$RESOURCE_GROUP" --location "$LOCATION" --output none

# "az vm create" returns once the VM has reported Ready, i.e. once azprov has finished.  If azprov
# reports a failure it fails within a few minutes; if nothing reports at all it fails only after
# the platform timeout (OSProvisioningTimedOut, tens of minutes).
log "creating $VM_NAME from $IMAGE_ID"
if ! az vm create \
    --resource-group "$RESOURCE_GROUP" \
    --name "$VM_NAME" \
    --computer-name "$COMPUTER_NAME" \
    --location "$LOCATION" \
    --image "$IMAGE_ID" \
    --size "$VM_SIZE" \
    --admin-username "$ADMIN_USER" \
    --authentication-type ssh \
    --ssh-key-values "$SSH_PUBLIC_KEY" \
    --enable-agent false \
    --public-ip-sku Standard \
    --output none; then
    log "az vm create failed; provisioning status as the platform sees it:"
    az vm get-instance-view --resource-group "$RESOURCE_GROUP" --name "$VM_NAME" \
        --query "instanceView.statuses[].{code:code, message:message}" --output table || true
    exit 1
fi

az vm get-instance-view --resource-group "$RESOURCE_GROUP" --name "$VM_NAME" \
    --query "instanceView.statuses[].code" --output tsv
ip=$(az vm show --resource-group "$RESOURCE_GROUP" --name "$VM_NAME" --show-details \
    --query publicIps --output tsv)
log "provisioned; log in with:  ssh $ADMIN_USER@$ip"
log "then look at:              sudo journalctl -u azprov   and   sudo azprov status"
