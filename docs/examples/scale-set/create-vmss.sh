#!/usr/bin/env bash
# create-vmss.sh: a virtual machine scale set from an azprov gallery image.
#
# Every instance boots without the platform agent (--enable-agent false) and azprov provisions it:
# hostname from the instance's computerName, admin user, SSH keys, Ready.
#
# Written against Azure CLI 2.6x.  Needs: bash >= 4.4, az (logged in).
set -euo pipefail

# ---- settings (override through the environment) ---------------------------------------------
RESOURCE_GROUP="${RESOURCE_GROUP:-rg-azprov-vmss}"
LOCATION="${LOCATION:-westeurope}"
SCALE_SET="${SCALE_SET:-azprov-vmss}"
ORCHESTRATION_MODE="${ORCHESTRATION_MODE:-Flexible}"   # or Uniform
INSTANCE_COUNT="${INSTANCE_COUNT:-3}"
VM_SKU="${VM_SKU:-Standard_B2s}"
COMPUTER_NAME_PREFIX="${COMPUTER_NAME_PREFIX:-azprov}" # hostnames: prefix + a per-instance suffix
ADMIN_USER="${ADMIN_USER:-azureuser}"
SSH_PUBLIC_KEY="${SSH_PUBLIC_KEY:-$HOME/.ssh/id_rsa.pub}"
# Gallery image definition ID (latest version) or image version ID.  Replicate the version to
# LOCATION with enough replicas for the number of VMs created at once.
IMAGE_ID="${IMAGE_ID:?set IMAGE_ID to the gallery image (version) resource ID}"
# "true" returns at once instead of waiting until every instance has reported Ready.
NO_WAIT="${NO_WAIT:-false}"
# ------------------------------------------------------------------------------------------------

log() { printf 'create-vmss: %s\n' "$*" >&2; }

[[ -r $SSH_PUBLIC_KEY ]] || { log "no public key at $SSH_PUBLIC_KEY (set SSH_PUBLIC_KEY)"; exit 1; }

extra_args=()
if [[ $ORCHESTRATION_MODE == Uniform && $INSTANCE_COUNT -gt 100 ]]; then
    # A Uniform scale set in a single placement group is limited to 100 instances.
    extra_args+=(--single-placement-group false)
fi
if [[ $NO_WAIT == true ]]; then
    extra_args+=(--no-wait)
fi

az group create --name "$RESOURCE_GROUP" --location "$LOCATION" --output none

log "creating $SCALE_SET ($ORCHESTRATION_MODE, $INSTANCE_COUNT x $VM_SKU) from $IMAGE_ID"
az vmss create \
    --resource-group "$RESOURCE_GROUP" \
    --name "$SCALE_SET" \
    --location "$LOCATION" \
    --orchestration-mode "$ORCHESTRATION_MODE" \
    --image "$IMAGE_ID" \
    --vm-sku "$VM_SKU" \
    --instance-count "$INSTANCE_COUNT" \
    --computer-name-prefix "$COMPUTER_NAME_PREFIX" \
    --admin-username "$ADMIN_USER" \
    --authentication-type ssh \
    --ssh-key-values "$SSH_PUBLIC_KEY" \
    --enable-agent false \
    "${extra_args[@]}" \
    --output none

# One line per instance: its name and provisioning state (Succeeded once azprov reported Ready).
az vmss list-instances --resource-group "$RESOURCE_GROUP" --name "$SCALE_SET" \
    --query "[].{name:name, computerName:osProfile.computerName, state:provisioningState}" \
    --output table
