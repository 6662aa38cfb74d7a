#!/usr/bin/env bash
# capture.sh: capture a prepared build VM as a Generalized image version in an Azure Compute
# Gallery, for VMs that azprov provisions.
#
# Before running it, the build VM must have azprov installed and WALinuxAgent/cloud-init removed
# (docs/examples/packer/install-azprov.sh does both).  This script then:
#   1. runs "azprov deprovision --force --user" in the VM over SSH, deletes the login user (the
#      VM cannot be logged in to after that) and runs "azprov check", which stops the capture
#      unless an image captured now would provision,
#   2. deallocates and generalizes the VM,
#   3. creates the gallery and the image definition if they do not exist,
#   4. creates the image version from the VM and prints its resource ID.
#
# Written against Azure CLI 2.6x.  Needs: bash >= 4.4, az (logged in), ssh.
set -euo pipefail

# ---- settings (override through the environment) ---------------------------------------------
RESOURCE_GROUP="${RESOURCE_GROUP:-rg-azprov-images}"
LOCATION="${LOCATION:-westeurope}"
BUILD_VM="${BUILD_VM:-azprov-build}"            # the prepared VM, in RESOURCE_GROUP
SSH_TARGET="${SSH_TARGET:-}"                    # user@host of that VM; empty = skip step 1
GALLERY="${GALLERY:-azprovGallery}"             # letters, digits, dots and underscores only
IMAGE_DEFINITION="${IMAGE_DEFINITION:-azprov-debian12}"
PUBLISHER="${PUBLISHER:-Contoso}"               # publisher/offer/sku: unique per definition
OFFER="${OFFER:-azprov-debian}"
SKU="${SKU:-12-gen2}"
HYPERV_GENERATION="${HYPERV_GENERATION:-V2}"    # V1 for Gen1 VMs, V2 for Gen2: must match BUILD_VM
ARCHITECTURE="${ARCHITECTURE:-x64}"             # Arm64 for Ampere (arm64) VMs, which are Gen2 only
# Empty, or e.g. "SecurityType=TrustedLaunchSupported" (needed when BUILD_VM uses Trusted Launch).
SECURITY_FEATURES="${SECURITY_FEATURES:-}"
IMAGE_VERSION="${IMAGE_VERSION:-1.0.0}"         # MAJOR.MINOR.PATCH
TARGET_REGIONS="${TARGET_REGIONS:-$LOCATION=1}" # space-separated region[=replicas] list
STORAGE_SKU="${STORAGE_SKU:-Standard_LRS}"
# ------------------------------------------------------------------------------------------------

log() { printf 'capture: %s\n' "$*" >&2; }

read -r -a target_regions <<<"$TARGET_REGIONS"
feature_args=()
if [[ -n $SECURITY_FEATURES ]]; then
    feature_args=(--features "$SECURITY_FEATURES")
fi

# 1. Generalize the guest, as root in one shell: once the login user is deleted, a new sudo
#    would fail.  That user was created by the marketplace image's agent, not by azprov, so it
#    is deleted by name ($SUDO_USER).  "azprov check" exits non-zero, listing each problem with
#    its fix, if the image would not provision: the script stops before generalizing.
if [[ -n $SSH_TARGET ]]; then
    log "deprovisioning the guest on $SSH_TARGET"
    ssh -o BatchMode=yes "$SSH_TARGET" sudo sh -ex <<'REMOTE'
test -n "$SUDO_USER"
test "$SUDO_USER" != root
azprov deprovision --force --user
rm -f /etc/sudoers.d/90-cloud-init-users /etc/sudoers.d/waagent
if id "$SUDO_USER" >/dev/null 2>&1; then userdel --force --remove "$SUDO_USER"; fi
azprov check
sync
REMOTE
else
    log "SSH_TARGET is empty: assuming 'azprov deprovision --force --user' and 'azprov check' already ran in $BUILD_VM"
fi

# 2. Generalize the Azure resource.  A generalized VM can never be started again.
log "deallocating $BUILD_VM"
az vm deallocate --resource-group "$RESOURCE_GROUP" --name "$BUILD_VM"
log "marking $BUILD_VM as generalized"
az vm generalize --resource-group "$RESOURCE_GROUP" --name "$BUILD_VM"
vm_id=$(az vm show --resource-group "$RESOURCE_GROUP" --name "$BUILD_VM" --query id --output tsv)

# 3. Gallery and image definition (both are kept across image versions).
if ! az sig show --resource-group "$RESOURCE_GROUP" --gallery-name "$GALLERY" --output none 2>/dev/null; then
    log "creating gallery $GALLERY"
    az sig create --resource-group "$RESOURCE_GROUP" --gallery-name "$GALLERY" --location "$LOCATION" --output none
fi
if ! az sig image-definition show --resource-group "$RESOURCE_GROUP" --gallery-name "$GALLERY" \
    --gallery-image-definition "$IMAGE_DEFINITION" --output none 2>/dev/null; then
    log "creating image definition $IMAGE_DEFINITION ($HYPERV_GENERATION, $ARCHITECTURE, Generalized)"
    az sig image-definition create \
        --resource-group "$RESOURCE_GROUP" \
        --gallery-name "$GALLERY" \
        --gallery-image-definition "$IMAGE_DEFINITION" \
        --location "$LOCATION" \
        --publisher "$PUBLISHER" \
        --offer "$OFFER" \
        --sku "$SKU" \
        --os-type Linux \
        --os-state Generalized \
        --hyper-v-generation "$HYPERV_GENERATION" \
        --architecture "$ARCHITECTURE" \
        "${feature_args[@]}" \
        --description "Provisioned by azprov: create VMs with --enable-agent false and SSH keys" \
        --output none
fi

# 4. The image version, captured straight from the generalized VM.
log "creating image version $IMAGE_VERSION in ${target_regions[*]}"
az sig image-version create \
    --resource-group "$RESOURCE_GROUP" \
    --gallery-name "$GALLERY" \
    --gallery-image-definition "$IMAGE_DEFINITION" \
    --gallery-image-version "$IMAGE_VERSION" \
    --location "$LOCATION" \
    --virtual-machine "$vm_id" \
    --target-regions "${target_regions[@]}" \
    --storage-account-type "$STORAGE_SKU" \
    --output none

az sig image-version show \
    --resource-group "$RESOURCE_GROUP" \
    --gallery-name "$GALLERY" \
    --gallery-image-definition "$IMAGE_DEFINITION" \
    --gallery-image-version "$IMAGE_VERSION" \
    --query id --output tsv
