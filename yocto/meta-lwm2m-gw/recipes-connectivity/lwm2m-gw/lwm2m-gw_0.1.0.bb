SUMMARY = "LwM2M server and edge gateway for Linux single-board computers"
SUMMARY:${PN}-sim = "Simulated LwM2M devices for trying a gateway out"
DESCRIPTION = "An LwM2M server for site gateways: devices register over CoAP \
               and DTLS, registrations and observations are kept in an \
               embedded store, and telemetry goes to the cloud over MQTT, \
               also after the uplink was down."
HOMEPAGE = "https://github.com/lwm2m-gw/lwm2m-gw"
BUGTRACKER = "https://github.com/lwm2m-gw/lwm2m-gw/issues"
SECTION = "net"
LICENSE = "Apache-2.0"
LIC_FILES_CHKSUM = "file://Cargo.toml;beginline=7;endline=7;md5=2507bd5f0713f05419cd2f22fa06fe62"
CVE_PRODUCT = "lwm2m-gw"

# mbedtls-sys builds Mbed TLS with cmake and binds it with libclang;
# tinydtls-sys builds tinydtls with autotools.
DEPENDS += "autoconf-native automake-native clang-native cmake-native libtool-native"

PV .= "+git"

# Where the sources come from; a local clone works through externalsrc
# (see the layer's README).
LWM2M_GW_GIT ?= "github.com/lwm2m-gw/lwm2m-gw.git"
LWM2M_GW_BRANCH ?= "main"
SRC_URI = "git://${LWM2M_GW_GIT};protocol=https;branch=${LWM2M_GW_BRANCH};destsuffix=${BP}"
# The layer lives in the gateway's own repository and follows its branch;
# a product pins SRCREV (and the crates that go with it) in a bbappend.
# nooelint: oelint.vars.autorev
SRCREV = "${AUTOREV}"

require ${BPN}-crates.inc

inherit cargo cargo-update-recipe-crates systemd useradd

export LIBCLANG_PATH = "${STAGING_LIBDIR_NATIVE}"
export BINDGEN_EXTRA_CLANG_ARGS = "--sysroot=${STAGING_DIR_TARGET} ${TUNE_CCARGS}"

# Which boards/ overlay to install: rpi3-armv7, rpi4-aarch64,
# generic-aarch64, or empty for the production defaults.
LWM2M_GW_BOARD ?= ""

USERADD_PACKAGES = "${PN}"
USERADD_PARAM:${PN} = "--system --no-create-home --home-dir ${localstatedir}/lib/lwm2m-gw \
                       --shell /sbin/nologin --user-group lwm2m-gw"

SYSTEMD_SERVICE:${PN} = "lwm2m-gw.service"
SYSTEMD_AUTO_ENABLE:${PN} = "enable"

do_install:append() {
    install -d ${D}${systemd_system_unitdir}
    install -m 0644 ${S}/systemd/lwm2m-gw.service ${D}${systemd_system_unitdir}/
    install -d ${D}${nonarch_libdir}/sysusers.d
    install -m 0644 ${S}/systemd/lwm2m-gw.sysusers ${D}${nonarch_libdir}/sysusers.d/lwm2m-gw.conf

    install -d ${D}${sysconfdir}/lwm2m-gw/profiles
    if [ -n "${LWM2M_GW_BOARD}" ]; then
        install -m 0644 ${S}/boards/${LWM2M_GW_BOARD}/lwm2m-gw.toml ${D}${sysconfdir}/lwm2m-gw/
        install -d ${D}${systemd_system_unitdir}/lwm2m-gw.service.d
        install -m 0644 ${S}/boards/${LWM2M_GW_BOARD}/lwm2m-gw.service.d/board.conf \
            ${D}${systemd_system_unitdir}/lwm2m-gw.service.d/
    else
        install -m 0644 ${S}/systemd/lwm2m-gw.toml ${D}${sysconfdir}/lwm2m-gw/
    fi

    install -d ${D}${datadir}/lwm2m-gw/models
    install -m 0644 ${S}/models/*.xml ${D}${datadir}/lwm2m-gw/models/
}

PACKAGES =+ "${PN}-sim"

FILES:${PN} += "${systemd_system_unitdir} ${nonarch_libdir}/sysusers.d"
FILES:${PN}-sim += "${bindir}/lwm2m-gw-sim"

CONFFILES:${PN} = "${sysconfdir}/lwm2m-gw/lwm2m-gw.toml"
