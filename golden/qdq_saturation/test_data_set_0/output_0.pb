
BlogitsJ(]Bถ”๖BkVBF:Aน๘มฝรiืM@iือมชาฏBiืMA