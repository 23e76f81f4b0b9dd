# shellcheck shell=bash
# shellcheck disable=SC2154,SC2034 # out_dir, up_to_date, log, die and build_flags come from the
# caller; stage and start are the caller's
# Sourced by the tests/lab/build-*.sh scripts, which build a tool from its Go module into a
# cache outside the repository (${HERALD_CACHE:-~/.cache/herald}) and rebuild it only when the
# hash of what decides the build (the stamp) changes.
#
# cache_begin WANT_HASH PRINTED_DIR
#   Ends the script (printing PRINTED_DIR on stdout) when the caller's `up_to_date WANT_HASH`
#   holds, before or after taking the cache's build lock (${out_dir}/.lock: one build at a time,
#   since tests and labs in parallel sessions share the cache). Otherwise returns holding the
#   lock, with ${stage} a fresh directory under ${out_dir} (removed on exit), the Go build
#   environment set (static, no toolchain download) and ${start} the time it began.
#   HERALD_BUILD_FORCE=1 rebuilds regardless of the stamp.
#
# cache_go_build NAME COLD DIR OUTPUT PACKAGE LDFLAGS
#   Builds PACKAGE (as `go build` names it, from DIR) into OUTPUT with the caller's
#   ${build_flags[@]} and LDFLAGS, saying before (with COLD, how long a cold build takes) and
#   after (how long the script has run), so a long build shows which step runs.
#
# cache_hash RECIPE DIR FILE...
#   Prints the stamp of a build: a hash of RECIPE (its flags), the Go toolchain and the FILEs
#   (relative to DIR, each named in what is hashed).

cache_begin() {
  local want="$1" printed="$2"
  if [[ "${HERALD_BUILD_FORCE:-0}" != 1 ]] && up_to_date "${want}"; then
    log "up to date: ${printed} (stamp ${want:0:12})"
    printf '%s\n' "${printed}"
    exit 0
  fi
  exec 9>"${out_dir}/.lock"
  log "waiting for the build lock ${out_dir}/.lock"
  flock 9
  if [[ "${HERALD_BUILD_FORCE:-0}" != 1 ]] && up_to_date "${want}"; then
    log "up to date after waiting: ${printed}"
    printf '%s\n' "${printed}"
    exit 0
  fi
  stage="$(mktemp -d "${out_dir}/stage.XXXXXX")"
  # shellcheck disable=SC2064 # the stage directory is known now
  trap "rm -rf '${stage}'" EXIT
  export CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=""
  start=${SECONDS}
}

cache_go_build() {
  local name="$1" cold="$2" dir="$3" output="$4" package="$5" ldflags="$6"
  log "building ${name} with $(go env GOVERSION) (${cold})"
  (
    cd "${dir}"
    go build "${build_flags[@]}" -ldflags="${ldflags}" -o "${output}" "${package}"
  ) || die "building ${name} failed"
  log "${name} built, $((SECONDS - start))s so far"
}

cache_hash() {
  local recipe="$1" dir="$2" f
  shift 2
  {
    printf 'recipe: %s | CGO_ENABLED=0\n' "${recipe}"
    printf 'go: %s\n' "$(go env GOVERSION) $(go env GOOS)/$(go env GOARCH)"
    for f in "$@"; do
      printf 'file: %s\n' "${f}"
      cat "${dir}/${f}"
    done
  } | sha256sum | cut -d' ' -f1
}
