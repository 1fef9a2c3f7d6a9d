# Builds Sputnik's static binary and its .deb and .rpm packages (docs/install.md):
#   make package        both packages in target/package/
#   make static         only the static x86_64 binary (musl, mimalloc; without the minilm
#                       feature: the packages ship multilingual-e5-small only)
#   make image          the OCI image (binary, model, time zones, CA certificates) in target/image/
# Needs: rustup target x86_64-unknown-linux-musl, Debian's musl-tools, cargo-deb and
# cargo-generate-rpm (packaging/setup installs all of them), and the model (models/fetch).

TARGET  := x86_64-unknown-linux-musl
BIN     := target/$(TARGET)/release/sputnik
STAGE   := target/package/stage
MODEL   := multilingual-e5-small
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)

.PHONY: package static stage deb rpm image check

package: deb rpm

static:
	cargo build --release --locked --target $(TARGET) --no-default-features

# Files the packages take that the binary generates (man page, completions) or that are
# adapted for an installed system (the configuration).
stage: static
	rm -rf $(STAGE)
	mkdir -p $(STAGE)/completions $(STAGE)/models/$(MODEL)
	$(BIN) man | gzip -9n > $(STAGE)/sputnik.1.gz
	$(BIN) completions bash > $(STAGE)/completions/sputnik.bash
	$(BIN) completions zsh > $(STAGE)/completions/_sputnik
	$(BIN) completions fish > $(STAGE)/completions/sputnik.fish
	sed -e 's|^data_dir = .*|data_dir = "/var/lib/sputnik"|' \
	    -e 's|^models_dir = .*|models_dir = "/usr/share/sputnik/models"|' \
	    assets/sputnik.example.toml > $(STAGE)/sputnik.toml
	grep -q '^data_dir = "/var/lib/sputnik"' $(STAGE)/sputnik.toml
	grep -q '^models_dir = "/usr/share/sputnik/models"' $(STAGE)/sputnik.toml
	test -f models/$(MODEL)/model.gguf || models/fetch $(MODEL)
	cp models/$(MODEL)/model.gguf models/$(MODEL)/tokenizer.json $(STAGE)/models/$(MODEL)/

deb: stage
	cargo deb --no-build --no-strip --target $(TARGET) --output target/package/

rpm: stage
	cargo generate-rpm --target $(TARGET) --output target/package/

image: stage
	packaging/image $(BIN) $(STAGE) target/image $(VERSION)

# Contents, metadata, an install into a throwaway Debian root, the unit, a backup round trip;
# the image read back by skopeo and umoci and started.
check: package image
	packaging/check
	packaging/check-image target/image/sputnik-oci $(VERSION)
