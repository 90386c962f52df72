# bash completion for weak-bpf-progs: commands, options, installed kernels and program paths
# (under --root when it is given). Installed as /usr/share/bash-completion/completions/weak-bpf-progs.

_weak_bpf_progs_kernels() {
    local root=${1%/} dir
    for dir in "$root"/usr/lib/modules/*/; do
        dir=${dir%/}
        if [[ -e $dir/vmlinuz || -e $dir/modules.dep || -e $dir/symvers.gz || -e $dir/symvers.xz \
              || -e $dir/symvers.zst || -e $dir/symvers ]]; then
            printf '%s\n' "${dir##*/}"
        fi
    done
    for dir in "$root"/boot/vmlinuz-*; do
        [[ -e $dir ]] && printf '%s\n' "${dir##*/vmlinuz-}"
    done
}

_weak_bpf_progs_programs() {
    local root=${1%/} path
    for path in "$root"/usr/lib/bpf/*/*.bpf.o "$root"/usr/lib/modules/*/bpf/extra/*/*.bpf.o; do
        [[ -e $path ]] && printf '%s\n' "${path#"$root"/}"
    done
}

_weak_bpf_progs() {
    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}
    local commands="add-kernel remove-kernel add-progs remove-progs audit explain greylist symvers
        kernels inspect verify"
    local options="--root --basedir --dry-run --json --no-journal --verbose --debug --help
        --version --add-kernel --remove-kernel --add-progs --remove-progs --add-modules
        --remove-modules"
    local root=/ command= args=0 i word
    for ((i = 1; i < COMP_CWORD; i++)); do
        word=${COMP_WORDS[i]}
        case $word in
            --root|--basedir) root=${COMP_WORDS[i+1]:-/}; ((i++)) ;;
            --kernel|--program|--btf|--symvers|--jobs|-j) ((i++)) ;;
            --add-kernel) command=add-kernel ;;
            --remove-kernel) command=remove-kernel ;;
            --add-progs|--add-modules) command=add-progs ;;
            --remove-progs|--remove-modules) command=remove-progs ;;
            -*) ;;
            *) if [[ -z $command ]]; then command=$word; else ((args++)); fi ;;
        esac
    done
    case $prev in
        --root|--basedir) mapfile -t COMPREPLY < <(compgen -d -- "$cur"); return ;;
        --btf|--symvers) mapfile -t COMPREPLY < <(compgen -f -- "$cur"); return ;;
        --kernel)
            mapfile -t COMPREPLY < <(compgen -W "$(_weak_bpf_progs_kernels "$root")" -- "$cur")
            return ;;
        --program)
            mapfile -t COMPREPLY < <(compgen -W "$(_weak_bpf_progs_programs "$root")" -- "$cur")
            return ;;
    esac
    if [[ $cur == -* ]]; then
        case $command in
            audit) options+=" --kernel --program --jobs --verify" ;;
            verify) options+=" --program" ;;
            greylist) options+=" --kernel --btf --symvers" ;;
        esac
        mapfile -t COMPREPLY < <(compgen -W "$options" -- "$cur")
    elif [[ -z $command ]]; then
        mapfile -t COMPREPLY < <(compgen -W "$commands" -- "$cur")
    else
        case $command in
            add-kernel|remove-kernel|symvers|kernels|audit|verify)
                mapfile -t COMPREPLY < <(compgen -W "$(_weak_bpf_progs_kernels "$root")" -- "$cur") ;;
            explain)
                if ((args == 0)); then
                    mapfile -t COMPREPLY < <(compgen -W "$(_weak_bpf_progs_programs "$root")" -- "$cur")
                else
                    mapfile -t COMPREPLY < <(compgen -W "$(_weak_bpf_progs_kernels "$root")" -- "$cur")
                fi ;;
            inspect|greylist)
                mapfile -t COMPREPLY < <(compgen -W "$(_weak_bpf_progs_programs "$root")" -- "$cur") ;;
        esac
    fi
}

complete -F _weak_bpf_progs weak-bpf-progs
