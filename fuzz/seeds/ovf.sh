#!/usr/bin/env bash
# Seeds for ovf_descriptor (descriptors and manifests as text) and ova_package (small OVAs).
set -euo pipefail
mkdir -p "$corpus/ovf_descriptor" "$corpus/ova_package"
cat >vm.ovf <<'XML'
<?xml version="1.0"?>
<Envelope ovf:version="1.0" xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData">
  <References><File ovf:id="file1" ovf:href="vm-disk1.vmdk" ovf:size="512"/></References>
  <DiskSection><Info>x</Info><Disk ovf:capacity="1" ovf:capacityAllocationUnits="byte * 2^30" ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/></DiskSection>
  <VirtualSystem ovf:id="vm"><Info>x</Info><Name>vm</Name>
    <OperatingSystemSection ovf:id="96"><Info>x</Info><Description>Debian_64</Description></OperatingSystemSection>
    <VirtualHardwareSection><Info>x</Info>
      <Item><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>2</rasd:VirtualQuantity></Item>
      <Item><rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits><rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>1024</rasd:VirtualQuantity></Item>
      <Item><rasd:InstanceID>3</rasd:InstanceID><rasd:ResourceType>6</rasd:ResourceType></Item>
      <Item><rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource><rasd:InstanceID>4</rasd:InstanceID><rasd:Parent>3</rasd:Parent><rasd:ResourceType>17</rasd:ResourceType></Item>
      <Item><rasd:Connection>NAT</rasd:Connection><rasd:InstanceID>5</rasd:InstanceID><rasd:ResourceType>10</rasd:ResourceType></Item>
    </VirtualHardwareSection></VirtualSystem>
</Envelope>
XML
head -c 512 /dev/zero >vm-disk1.vmdk
printf 'SHA1(vm.ovf)= %s\nSHA1(vm-disk1.vmdk)= %s\n' "$(sha1sum vm.ovf | cut -d' ' -f1)" \
  "$(sha1sum vm-disk1.vmdk | cut -d' ' -f1)" >vm.mf
cp vm.ovf "$corpus/ovf_descriptor/seed-vm.ovf"
cp vm.mf "$corpus/ovf_descriptor/seed-vm.mf"
tar --format=ustar -cf "$corpus/ova_package/seed-vm.ova" vm.ovf vm.mf vm-disk1.vmdk
tar --format=gnu -cf "$corpus/ova_package/seed-gnu.ova" vm.ovf vm-disk1.vmdk
