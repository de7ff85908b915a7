-- The demo PACS forwards every CR/DX image it receives to pneumoscreen's listener (`screen listen`).
-- Only these SOP classes: the SR and heatmap SC that pneumoscreen sends back must not loop.
local screened = {
  ['1.2.840.10008.5.1.4.1.1.1'] = true,        -- CR Image Storage
  ['1.2.840.10008.5.1.4.1.1.1.1'] = true,      -- Digital X-Ray Image Storage - For Presentation
  ['1.2.840.10008.5.1.4.1.1.1.1.1'] = true,    -- Digital X-Ray Image Storage - For Processing
}

function OnStoredInstance(instanceId, tags, metadata, origin)
  if screened[tags['SOPClassUID']] and origin['RequestOrigin'] ~= 'Lua' then
    SendToModality(instanceId, 'pneumoscreen')
  end
end
