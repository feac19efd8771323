# UEFI shell script on Spindle's ESP. The firmware starts its shell only when every
# boot option before it failed, i.e. when BOOTX64.EFI returned (it prints why first):
# end the run instead of leaving QEMU at a shell prompt.
echo "Spindle: the EFI loader returned to the firmware; powering off"
reset -s
