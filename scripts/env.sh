# Source me: puts the venv, the ROS 2 wheels' prefix and our built interfaces on the paths, and
# keeps DDS discovery on this machine. Usage: source scripts/env.sh
_rats_repo=$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)
_rats_site=$(echo "$_rats_repo"/install/lib/python3*/site-packages)
export VIRTUAL_ENV="$_rats_repo/.venv"
export PATH="$VIRTUAL_ENV/bin:$PATH"
export PYTHONPATH="$_rats_repo:$_rats_site${PYTHONPATH:+:$PYTHONPATH}"
export LD_LIBRARY_PATH="$_rats_repo/install/lib:$VIRTUAL_ENV/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export AMENT_PREFIX_PATH="$_rats_repo/install:$VIRTUAL_ENV"
export RMW_IMPLEMENTATION=${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}
# Network rule: discovery never leaves this machine unless the caller says otherwise.
export ROS_AUTOMATIC_DISCOVERY_RANGE=${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}
# One domain for all of this user's shells (a node in one, a client in another), unless already
# set; tests and the demo choose their own.
export ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-$(( ($(id -u) % 90) + 10 ))}
# Never reach a model hub: checkpoints are local paths, ids resolve from the local cache only.
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}
export TRANSFORMERS_OFFLINE=${TRANSFORMERS_OFFLINE:-1}
unset _rats_repo _rats_site
