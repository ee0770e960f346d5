// Cairn on Azure VMs: a VM scale set of stateless nodes behind an internal
// load balancer, a storage account container for the stores, and a
// user-assigned managed identity that may read and write that container
// only. No keys anywhere: the nodes get tokens from the instance metadata
// service. docs/DEPLOY.md walks through it.
//
//   az deployment group create -g cairn-rg -f deploy/azure/main.bicep \
//     -p storageAccountName=cairnprod01 sshPublicKey=@~/.ssh/id_ed25519.pub \
//        binaryUrl=https://example.com/cairn-x86_64-unknown-linux-gnu tokensJson=@tokens.json

@description('Region of every resource.')
param location string = resourceGroup().location

@description('Prefix of resource names.')
@minLength(3)
@maxLength(16)
param namePrefix string = 'cairn'

@description('Nodes in the scale set.')
@minValue(1)
@maxValue(100)
param instanceCount int = 2

param vmSize string = 'Standard_D2s_v5'

param adminUsername string = 'azureuser'

@description('SSH public key of the admin user (password login is off).')
param sshPublicKey string

@description('Storage account for the stores (3-24 lowercase letters and digits, globally unique).')
@minLength(3)
@maxLength(24)
param storageAccountName string

param containerName string = 'cairn'

@description('Where the VMs download the cairn binary (a release artefact, x86_64-unknown-linux-gnu).')
param binaryUrl string

@description('The tokens file (SHA-256 hashes of tokens, docs/SECURITY.md), as one line of JSON.')
@secure()
param tokensJson string

@description('Addresses allowed to reach the API on port 7070.')
param clientAddressPrefix string = '10.40.0.0/16'

var storageBlobDataContributor = 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: '${namePrefix}-id'
  location: location
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: storageAccountName
  location: location
  sku: { name: 'Standard_ZRS' }
  kind: 'StorageV2'
  properties: {
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
  }
}

resource blobs 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    // Deleted stores' objects stay recoverable for a week.
    deleteRetentionPolicy: { enabled: true, days: 7 }
  }
}

resource container 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobs
  name: containerName
  properties: { publicAccess: 'None' }
}

// The nodes' identity may use this container, and nothing else.
resource access 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: container
  name: guid(container.id, identity.id, storageBlobDataContributor)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataContributor)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource nsg 'Microsoft.Network/networkSecurityGroups@2023-11-01' = {
  name: '${namePrefix}-nsg'
  location: location
  properties: {
    securityRules: [
      {
        name: 'cairn-api'
        properties: {
          priority: 100
          direction: 'Inbound'
          access: 'Allow'
          protocol: 'Tcp'
          sourceAddressPrefix: clientAddressPrefix
          sourcePortRange: '*'
          destinationAddressPrefix: '*'
          destinationPortRange: '7070'
        }
      }
      {
        name: 'load-balancer-probe'
        properties: {
          priority: 110
          direction: 'Inbound'
          access: 'Allow'
          protocol: 'Tcp'
          sourceAddressPrefix: 'AzureLoadBalancer'
          sourcePortRange: '*'
          destinationAddressPrefix: '*'
          destinationPortRange: '7070'
        }
      }
      {
        name: 'deny-the-rest'
        properties: {
          priority: 4000
          direction: 'Inbound'
          access: 'Deny'
          protocol: '*'
          sourceAddressPrefix: '*'
          sourcePortRange: '*'
          destinationAddressPrefix: '*'
          destinationPortRange: '*'
        }
      }
    ]
  }
}

resource vnet 'Microsoft.Network/virtualNetworks@2023-11-01' = {
  name: '${namePrefix}-vnet'
  location: location
  properties: {
    addressSpace: { addressPrefixes: ['10.40.0.0/16'] }
    subnets: [
      {
        name: 'nodes'
        properties: {
          addressPrefix: '10.40.1.0/24'
          networkSecurityGroup: { id: nsg.id }
          // Storage traffic stays on the Azure backbone.
          serviceEndpoints: [{ service: 'Microsoft.Storage' }]
        }
      }
    ]
  }
}

resource lb 'Microsoft.Network/loadBalancers@2023-11-01' = {
  name: '${namePrefix}-lb'
  location: location
  sku: { name: 'Standard' }
  properties: {
    frontendIPConfigurations: [
      {
        name: 'api'
        properties: {
          subnet: { id: vnet.properties.subnets[0].id }
          privateIPAllocationMethod: 'Dynamic'
        }
      }
    ]
    backendAddressPools: [{ name: 'nodes' }]
    probes: [
      {
        name: 'readyz'
        properties: { protocol: 'Http', port: 7070, requestPath: '/readyz', intervalInSeconds: 5, numberOfProbes: 2 }
      }
    ]
    loadBalancingRules: [
      {
        name: 'api'
        properties: {
          frontendIPConfiguration: { id: resourceId('Microsoft.Network/loadBalancers/frontendIPConfigurations', '${namePrefix}-lb', 'api') }
          backendAddressPool: { id: resourceId('Microsoft.Network/loadBalancers/backendAddressPools', '${namePrefix}-lb', 'nodes') }
          probe: { id: resourceId('Microsoft.Network/loadBalancers/probes', '${namePrefix}-lb', 'readyz') }
          protocol: 'Tcp'
          frontendPort: 7070
          backendPort: 7070
          // Long-polls hold connections up to 30 s.
          idleTimeoutInMinutes: 4
          enableTcpReset: true
        }
      }
    ]
  }
}

var cloudInit = replace(replace(replace(replace(replace(replace(loadTextContent('cloud-init.yaml'),
  '__CONTAINER__', containerName),
  '__STORAGE_ACCOUNT__', storageAccountName),
  '__IDENTITY_CLIENT_ID__', identity.properties.clientId),
  '__TOKENS_JSON__', tokensJson),
  '__UNIT_B64__', base64(loadTextContent('cairn.service'))),
  '__BINARY_URL__', binaryUrl)

resource vmss 'Microsoft.Compute/virtualMachineScaleSets@2024-03-01' = {
  name: '${namePrefix}-vmss'
  location: location
  sku: { name: vmSize, capacity: instanceCount }
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: { '${identity.id}': {} }
  }
  dependsOn: [access, lb]
  properties: {
    orchestrationMode: 'Uniform'
    overprovision: false
    upgradePolicy: { mode: 'Manual' }
    virtualMachineProfile: {
      osProfile: {
        computerNamePrefix: namePrefix
        adminUsername: adminUsername
        customData: base64(cloudInit)
        linuxConfiguration: {
          disablePasswordAuthentication: true
          ssh: { publicKeys: [{ path: '/home/${adminUsername}/.ssh/authorized_keys', keyData: sshPublicKey }] }
          patchSettings: { patchMode: 'ImageDefault' }
        }
      }
      securityProfile: {
        securityType: 'TrustedLaunch'
        uefiSettings: { secureBootEnabled: true, vTpmEnabled: true }
      }
      storageProfile: {
        imageReference: { publisher: 'Canonical', offer: 'ubuntu-24_04-lts', sku: 'server', version: 'latest' }
        osDisk: { createOption: 'FromImage', caching: 'ReadWrite', managedDisk: { storageAccountType: 'Premium_LRS' } }
      }
      networkProfile: {
        networkInterfaceConfigurations: [
          {
            name: 'nic'
            properties: {
              primary: true
              ipConfigurations: [
                {
                  name: 'ip'
                  properties: {
                    subnet: { id: vnet.properties.subnets[0].id }
                    loadBalancerBackendAddressPools: [{ id: lb.properties.backendAddressPools[0].id }]
                  }
                }
              ]
            }
          }
        ]
      }
    }
  }
}

output apiAddress string = 'http://${lb.properties.frontendIPConfigurations[0].properties.privateIPAddress}:7070'
output identityClientId string = identity.properties.clientId
