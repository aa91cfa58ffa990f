#!/usr/bin/env bash
# Launch ipmix-dali training in the container: one node, every GPU, torchrun inside.
#
#   docker/train.sh --data /datasets/imagenet --out /runs/r1 [--mixing-set /datasets/fractals] \
#       [--image ipmix-dali:latest] [--nproc N] [--dry-run] -- [ipmix-dali train flags]
#
# Multi-node (run on every node, same --master-addr/--master-port, node ranks 0..N-1):
#   docker/train.sh --nnodes 2 --node-rank 0 --master-addr 10.0.0.1 --master-port 29500 ...
# uses torchrun's static rendezvous and the host network (NCCL needs the nodes' interfaces).
#
# --data is mounted read-only at /data (train/ and val/ inside), --out read-write at /out,
# --mixing-set read-only at /mixing. --dry-run prints the docker command and runs nothing.
set -euo pipefail

usage() {
    sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
}

die() {
    echo "docker/train.sh: error: $*" >&2
    exit 2
}

image="ipmix-dali:latest"
data=""
out=""
mixing=""
nproc=""
nnodes=1
node_rank=0
master_addr=""
master_port=29500
dry_run=0
extra=()

while [[ $# -gt 0 ]]; do
    case "$1" in
        --data) data="${2:?--data needs a folder}"; shift 2 ;;
        --out) out="${2:?--out needs a folder}"; shift 2 ;;
        --mixing-set) mixing="${2:?--mixing-set needs a folder}"; shift 2 ;;
        --image) image="${2:?--image needs a name}"; shift 2 ;;
        --nproc) nproc="${2:?--nproc needs a number}"; shift 2 ;;
        --nnodes) nnodes="${2:?--nnodes needs a number}"; shift 2 ;;
        --node-rank) node_rank="${2:?--node-rank needs a number}"; shift 2 ;;
        --master-addr) master_addr="${2:?--master-addr needs an address}"; shift 2 ;;
        --master-port) master_port="${2:?--master-port needs a port}"; shift 2 ;;
        --dry-run) dry_run=1; shift ;;
        -h|--help) usage; exit 0 ;;
        --) shift; extra=("$@"); break ;;
        *) die "unknown option $1 (train flags go after --; see --help)" ;;
    esac
done

[[ -n "$data" ]] || die "--data DIR is required (a folder with ImageFolder train/ and val/)"
[[ -n "$out" ]] || die "--out DIR is required (checkpoints, metrics and TensorBoard go there)"
if [[ $dry_run -eq 0 ]]; then
    [[ -d "$data/train" && -d "$data/val" ]] || die "$data needs train/ and val/ class folders"
    mkdir -p "$out"
fi
if [[ -z "$nproc" ]]; then
    nproc=$( (nvidia-smi -L 2>/dev/null || true) | grep -c '^GPU' || true)
    if [[ "$nproc" -eq 0 ]]; then
        [[ $dry_run -eq 1 ]] || die "no GPU found with nvidia-smi: pass --nproc N"
        nproc=1
    fi
fi
if [[ "$nnodes" -gt 1 && -z "$master_addr" ]]; then
    die "--nnodes $nnodes needs --master-addr (the address of node rank 0)"
fi

abs() { (cd "$1" 2>/dev/null && pwd) || echo "$1"; }

# The container runs as the calling user, so that --out stays writable and its files are theirs;
# HOME is /tmp (that uid has no home in the image) and caches (compiled kernels, mixing banks)
# persist under the run folder.
cmd=(docker run --rm --gpus all --ipc=host --ulimit memlock=-1 --ulimit stack=67108864
     --user "$(id -u):$(id -g)" -e HOME=/tmp -e XDG_CACHE_HOME=/out/.cache
     -v "$(abs "$data"):/data:ro" -v "$(abs "$out"):/out")
if [[ -n "$mixing" ]]; then
    cmd+=(-v "$(abs "$mixing"):/mixing:ro")
fi
if [[ "$nnodes" -gt 1 ]]; then
    cmd+=(--network host)
fi
cmd+=(--entrypoint torchrun "$image" --nproc_per_node="$nproc")
if [[ "$nnodes" -gt 1 ]]; then
    cmd+=(--nnodes="$nnodes" --node_rank="$node_rank" --master_addr="$master_addr"
          --master_port="$master_port")
else
    cmd+=(--standalone)
fi
cmd+=(-m ipmix_dali.train --device gpu --data /data --out /out)
if [[ -n "$mixing" ]]; then
    cmd+=(--mixing-set /mixing)
fi
cmd+=("${extra[@]}")

if [[ $dry_run -eq 1 ]]; then
    printf '%q ' "${cmd[@]}"
    echo
    exit 0
fi
exec "${cmd[@]}"
