B
loop_finalJnV$@ò'@	¿>@›þ&@